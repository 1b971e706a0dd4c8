# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""experiments.methods_screen: one row per method, scaling and loss weighting, each a valid run_multitask.py
command that changes one thing of `best`, at the budget asked for (1 epoch for the screen), in runs named by it; and
what a run's record keeps of the weights and gradient norms it logged, drawn per row and epoch."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_args

import plot_multitask
import run_multitask
from experiments.methods_figures import plot_task_statistics
from experiments.methods_screen import format_table
from experiments.records import summarize_history
from trainer.surgery import SURGERIES


REPO = Path(__file__).resolve().parents[1]
CHANGED = ("gradient_surgery", "gradient_scaling", "max_grad_norm", "task_weights", "loss_weighting")


def test_every_row_is_one_change_from_best_at_the_asked_budget(tmp_path):
    best = run_multitask.parse_args(["--preset", "best", "--output_dir", str(tmp_path)])[2]
    for epochs in ("1", "2"):
        lines = subprocess.run(
            [sys.executable, "-m", "experiments.methods_screen", "--dry_run", "--output_dir", str(tmp_path),
             "--num_train_epochs", epochs],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        assert len(lines) == len(SURGERIES) + 6
        changes = set()
        for line in lines:
            argv = shlex.split(line)
            _, _, args = run_multitask.parse_args(argv[2:])
            assert args.num_train_epochs == float(epochs) and args.output_dir.endswith(f"-e{epochs}-seed0")
            changed = tuple(
                (key, str(getattr(args, key))) for key in CHANGED if getattr(args, key) != getattr(best, key)
            )
            assert len({key for key, _ in changed} - {"max_grad_norm"}) <= 1, (
                line
            )  # clip_per_task also unclips the sum
            changes.add(changed)
        assert len(changes) == len(lines)  # every row changes something else (`none` changes nothing)


def test_with_pals_every_row_is_the_same_change_with_pals_on(tmp_path):
    def dry_run(*extra):
        return subprocess.run(
            [sys.executable, "-m", "experiments.methods_screen", "--dry_run", "--output_dir", str(tmp_path),
             "--rows", "none", "imtl_g", "--num_train_epochs", "2", *extra],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip

    for plain, with_pals in zip(dry_run(), dry_run("--pals"), strict=True):
        plain_model, _, plain_args = run_multitask.parse_args(shlex.split(plain)[2:])
        pals_model, _, pals_args = run_multitask.parse_args(shlex.split(with_pals)[2:])
        assert not plain_model.use_pals and pals_model.use_pals
        assert pals_args.output_dir == plain_args.output_dir.replace("-e2-seed0", "_pals-e2-seed0")
        assert pals_args.gradient_surgery == plain_args.gradient_surgery


@pytest.mark.usefixtures("one_thread")
def test_a_run_record_keeps_the_weights_and_norms_it_logged_per_epoch(tiny_checkpoint, tiny_data, tmp_path):
    """A real 2-epoch UPGrad run with learned loss weights: its record has, per task and epoch, the mean of the
    logged Gramian weights, gradient norms and loss weights of that epoch, and the figure draws them."""
    output_dir = tmp_path / "run"
    run_multitask.main(
        cli_args(tiny_checkpoint, tiny_data, output_dir, "--do_train", "--preset", "naive", "--gradient_surgery",
                 "upgrad", "--loss_weighting", "uncertainty", "--num_train_epochs", "2", "--max_train_samples", "8",
                 "--logging_steps", "1", "--save_strategy", "no")
    )  # fmt: skip
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    statistics = summarize_history(history)["task_statistics_per_epoch"]
    assert set(statistics) == {"weight", "grad_norm", "loss_weight"}
    logs = [entry for entry in history if "loss" in entry]
    for name, key in (("weight", "surgery/{}/weight"), ("grad_norm", "surgery/{}/grad_norm"),
                      ("loss_weight", "loss_weight/{}")):  # fmt: skip
        assert set(statistics[name]) == {"sst", "para", "sts"}
        for task, by_epoch in statistics[name].items():
            assert set(by_epoch) == {1, 2}
            for epoch, mean in by_epoch.items():
                values = [e[key.format(task)] for e in logs if plot_multitask.epoch_of(e) == epoch]
                assert values and mean == pytest.approx(sum(values) / len(values))
    record = {"preset": "upgrad-e2", "seed": 0, "task_statistics_per_epoch": json.loads(json.dumps(statistics))}
    figure = plot_task_statistics([record], tmp_path / "task_statistics.png")
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert plot_task_statistics([{"preset": "none-e1", "seed": 0}], tmp_path / "nothing.png") is None


def test_the_table_gives_each_row_its_difference_to_none_at_the_same_epochs():
    def record(row, seed, overall):
        return {
            "preset": row, "seed": seed, "command": f"python run_multitask.py --seed {seed}", "time_per_epoch_s": 60.0,
            "eval_sst_accuracy": 0.5, "eval_para_accuracy": 0.8, "eval_sts_pearson": 0.8, "eval_overall": overall,
        }  # fmt: skip

    records = [record("none-e2", 0, 0.70), record("none-e2", 1, 0.72), record("upgrad-e2", 0, 0.76),
               record("upgrad-e2", 1, 0.78), record("mgda-e2", 0, 0.71), record("mgda-e2", 1, 0.73),
               record("none-e1", 0, 0.70), record("imtl_g-e1", 0, 0.75),
               record("upgrad_pals-e2", 0, 0.74)]  # fmt: skip
    records[1]["reused_from"] = "results/recipe/runs/best-seed1.json"
    table = format_table(records).split("\n\n")[0].splitlines()[2:]
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ") for line in table}
    assert rows["upgrad"][2] == "2" and rows["upgrad"][8] == "+0.060 *"  # 0.06 > 0.014 + 0.014
    assert rows["mgda"][8] == "+0.010"  # within the spread
    assert rows["imtl_g"][8] == "+0.050"  # one seed: no spread to compare with
    assert rows["none"][8] == ""
    assert rows["upgrad_pals"][1] == "gradient surgery `upgrad`, with PALs" and rows["upgrad_pals"][8] == "+0.030"
    order = [line.split(" | ")[0].strip("| `") + "-e" + line.split(" | ")[2] for line in table]
    assert order == ["none-e1", "imtl_g-e1", "none-e2", "mgda-e2", "upgrad-e2", "upgrad_pals-e2"]  # PALs last
    assert "`none-e2-seed1` is results/recipe/runs/best-seed1.json." in format_table(records)
