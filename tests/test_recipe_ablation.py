# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""experiments.recipe_ablation: every row is a valid run_multitask.py command with the reproduction's budget, and
its `combined` row is the paper reproduction's own run; its table keeps one cell per column; every recorded run is
its row's command as the code builds it now."""

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import run_multitask
from experiments import recipe_ablation, recipe_curves


REPO = Path(__file__).resolve().parents[1]
# A run's dev metrics, for the table tests.
METRICS = {"eval_sst_accuracy": 0.5, "eval_para_accuracy": 0.8, "eval_sts_pearson": 0.9, "eval_overall": 0.733}


def test_every_row_is_a_valid_command_with_one_budget(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.recipe_ablation", "--dry_run", "--output_dir", str(tmp_path / "recipe"),
         "--paper_output_dir", str(tmp_path / "paper"), "--seeds", "0", "1"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    paper = subprocess.run(
        [sys.executable, "-m", "experiments.reproduce_paper", "--dry_run", "--output_dir", str(tmp_path / "paper"),
         "--seeds", "0", "1", "--presets", "combined"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert set(paper) <= set(lines)  # the `combined` rows are the reproduction's commands, run once for both
    configs = set()
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["python", "run_multitask.py"]
        model_args, data_args, training_args = run_multitask.parse_args(argv[2:])
        row = Path(training_args.output_dir).name.rsplit("-seed", 1)[0]
        # The rows on `best` train its two epochs, those of `ROW_EPOCHS` their own, the others one.
        epochs = recipe_ablation.ROW_EPOCHS.get(row, 2 if "--preset best" in line else 1)
        assert (training_args.num_train_epochs, training_args.per_device_train_batch_size) == (epochs, 8)
        assert training_args.eval_strategy == "epoch" and training_args.load_best_model_at_end
        config = run_multitask.build_config(model_args, data_args.tasks)  # every option valid together
        configs.add(
            (
                json.dumps(config.tasks, sort_keys=True), config.pooling, config.use_pals, training_args.seed,
                training_args.gradient_surgery, training_args.learning_rate, training_args.warmup_steps,
                training_args.layerwise_lr_decay, training_args.num_train_epochs, training_args.task_schedule,
                training_args.ema_decay, tuple(training_args.task_weights),
            )
        )  # fmt: skip
    assert len(configs) == len(lines)  # each row changes something


def test_the_ladder_ends_at_the_best_preset_one_change_at_a_time(tmp_path):
    """`two_epochs` changes nothing but the epochs from the row before it; `best`, nothing but the STS loss from it."""
    parsed = {}
    for row in ("no_pals_gradvac", "two_epochs", "best"):
        argv = [*recipe_ablation.ROWS[row][1], "--output_dir", str(tmp_path), "--do_train"]
        model_args, data_args, training_args = run_multitask.parse_args(argv)
        config = run_multitask.build_config(model_args, data_args.tasks)
        parsed[row] = dict(
            tasks=config.tasks, pooling=config.pooling, use_pals=config.use_pals, sts_head=config.sts_head,
            surgery=training_args.gradient_surgery, schedule=training_args.task_schedule,
            learning_rate=training_args.learning_rate, warmup=training_args.warmup_steps,
            layerwise_lr_decay=training_args.layerwise_lr_decay, epochs=training_args.num_train_epochs,
        )  # fmt: skip
    assert (parsed["no_pals_gradvac"].pop("epochs"), parsed["two_epochs"].pop("epochs")) == (3.0, 2)  # default; preset
    assert parsed["two_epochs"] == parsed["no_pals_gradvac"]
    assert parsed["best"].pop("epochs") == 2
    sts_losses = [parsed[row]["tasks"]["sts"].pop("loss") for row in ("two_epochs", "best")]
    assert sts_losses == ["cosent", "mse"]
    assert parsed["best"] == parsed["two_epochs"]


def test_the_table_has_one_cell_per_column_in_every_row():
    # A row's description may hold a `|` (`[u, v, |u-v|, u*v]`): escaped, it stays in its cell.
    records = [
        {"preset": row, "seed": 0, "train_runtime": 60.0, "command": f"python run_multitask.py {row}", **METRICS}
        for row in recipe_ablation.ROWS
    ]
    floor = {"best": {"sst": 0.4, "para": 0.8, "sts": 0.8, "overall": 0.67}, "command": "python frozen_floor.py"}
    lines = [line for line in recipe_ablation.format_table(records, floor).splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 1 + len(recipe_ablation.ROWS) + 2  # header, rule, floor, rows, paper, targets
    assert any("\\|u-v\\|" in line for line in lines)
    for line in lines:
        assert len(re.split(r"(?<!\\)\|", line)) == 11, line  # 9 cells between 10 pipes
    # The leaderboard score beside overall: (SST + Quora + (STS + 1) / 2) / 3 of the task metrics.
    assert " | 0.733 | 0.750 | " in lines[3]


def test_the_curves_draw_each_rows_dev_metric_and_train_dev_gap(tmp_path):
    epochs = [{"epoch": 1.0, **METRICS}, {"epoch": 2.0, **METRICS}]
    losses = [{"epoch": 1, "loss_sst": 1.2}, {"epoch": 2, "loss_sst": 0.9}]
    dev_losses = [{"epoch": 1, "eval_sst_loss": 1.25}, {"epoch": 2, "eval_sst_loss": 1.3}]
    (tmp_path / "runs").mkdir()
    for row in ("best", "best_rdrop_sst"):
        record = {"preset": row, "seed": 0, "dev_per_epoch": epochs, "loss_per_epoch": losses}
        (tmp_path / "runs" / f"{row}-seed0.json").write_text(json.dumps({**record, "dev_loss_per_epoch": dev_losses}))
    path = recipe_curves.main(["--results_dir", str(tmp_path), "--task", "sst"])
    assert path == tmp_path / "curves-sst.png" and path.read_bytes().startswith(b"\x89PNG")


def test_the_table_takes_the_combined_row_from_the_paper_reproduction(tmp_path):
    for results_dir, row in ((tmp_path / "paper", "combined"), (tmp_path / "recipe", "best")):
        (results_dir / "runs").mkdir(parents=True)
        record = {"preset": row, "seed": 0, "train_runtime": 60.0, "command": f"python run_multitask.py {row}"}
        (results_dir / "runs" / f"{row}-seed0.json").write_text(json.dumps({**record, **METRICS}))
    recipe_ablation.main(
        ["--table_only", "--results_dir", str(tmp_path / "recipe"), "--paper_results_dir", str(tmp_path / "paper")]
    )
    rows = [line.split(" | ")[0] for line in (tmp_path / "recipe" / "table.md").read_text().splitlines()]
    assert "| `combined`" in rows and "| `best`" in rows


def test_every_recorded_run_is_the_command_its_row_builds_now():
    """A preset that changes (as `best` took MSE on STS) must not leave a recorded row reading as another config."""
    records = [json.loads(path.read_text()) for path in sorted((REPO / "results" / "recipe" / "runs").glob("*.json"))]
    assert {record["preset"] for record in records} >= {"two_epochs", "best"}
    for record in records:
        args = argparse.Namespace(
            rows=[record["preset"]], seeds=[record["seed"]], output_dir=Path(record["output_dir"]).parent,
            results_dir=REPO / "results" / "recipe", num_train_epochs=1, paper_output_dir=Path("unused"),
            paper_results_dir=Path("unused"),
        )  # fmt: skip
        (run,) = recipe_ablation.build_runs(args, [])
        assert run.command == record["command"], record["preset"]
