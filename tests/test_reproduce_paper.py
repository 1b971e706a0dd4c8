# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""experiments.reproduce_paper (with the runner, records and tables it uses): the commands it prints, a real end-to-end
reproduction with a tiny BERT (runs, skip on rerun, gathering, resuming, table and figures), the table's statistics
and committing results."""

import itertools
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import plot_multitask
import run_multitask
from experiments import paper_table, reproduce_paper, runner
from experiments.records import steps_per_epoch, summarize_history
from trainer.checkpoints import write_json_atomically
from trainer.presets import PAPER_PRESETS, PRESETS


REPO = Path(__file__).resolve().parents[1]


def test_dry_run_prints_one_valid_command_per_run(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.reproduce_paper",
            "--dry_run",
            "--output_dir",
            str(tmp_path),
            "--seeds",
            "0",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 12
    seen = set()
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["python", "run_multitask.py"]
        model_args, data_args, training_args = run_multitask.parse_args(argv[2:])
        preset, seed = model_args.preset, training_args.seed
        seen.add((preset, seed))
        assert training_args.output_dir == str(tmp_path / f"{preset}-seed{seed}")
        # One budget: the same data, batch, schedule, epochs and evaluation for every run.
        assert training_args.do_train and training_args.do_eval and training_args.load_best_model_at_end
        assert (training_args.num_train_epochs, training_args.per_device_train_batch_size) == (1, 8)
        assert training_args.task_schedule == "round_robin"
        assert training_args.eval_strategy == "epoch" and training_args.save_strategy == "epoch"
        assert data_args.max_train_samples is None
        if preset == "baseline":  # keeps its frozen encoder and learning rate
            assert training_args.freeze_encoder and training_args.learning_rate == 1e-3
        else:
            assert not training_args.freeze_encoder and training_args.learning_rate == 5e-5
        expected_surgery = "gradvac" if preset in ("gradvac", "combined") else "none"
        assert training_args.gradient_surgery == expected_surgery
    assert seen == set(itertools.product(PAPER_PRESETS, [0, 1]))
    # The seeds outermost: an interrupted reproduction has whole seeds first.
    assert [shlex.split(line)[5] for line in lines] == ["0"] * 6 + ["1"] * 6

    with pytest.raises(SystemExit):  # the seed is the script's, per run
        reproduce_paper.parse_args(["--seed", "3"])


def test_reproduction_end_to_end(tiny_checkpoint, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two cores shared: OpenMP threads that spin would slow runs 10x
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output_dir, results_dir = tmp_path / "outputs", tmp_path / "results"
    argv = [
        "--output_dir", str(output_dir), "--results_dir", str(results_dir), "--seeds", "0",
        "--presets", "naive", "combined",
        "--model_name_or_path", tiny_checkpoint, "--data_dir", str(data_dir),
        "--pal_size", "12", "--pal_num_heads", "3",
        "--max_train_samples", "16", "--max_eval_samples", "16", "--max_steps", "4", "--logging_steps", "1",
        "--per_device_eval_batch_size", "64", "--dataloader_pin_memory", "false",
    ]  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    outcome = reproduce_paper.main(argv)
    assert outcome["ran"] == ["naive-seed0", "combined-seed0"] and not outcome["failed"]

    records = {}
    for preset in ("naive", "combined"):
        record = json.loads((results_dir / "runs" / f"{preset}-seed0.json").read_text())
        records[preset] = record
        run_dir = output_dir / f"{preset}-seed0"
        assert (record["preset"], record["seed"], record["commit"]) == (preset, 0, commit.strip())
        assert isinstance(record["dirty"], bool)
        model_args, _, training_args = run_multitask.parse_args(shlex.split(record["command"])[2:])
        assert (model_args.preset, training_args.seed, training_args.max_steps) == (preset, 0, 4)
        # 16 rows per task, 8 per step: 2 steps an epoch, 4 steps are 2 epochs, a dev evaluation after each.
        assert (record["steps"], record["steps_per_epoch"], record["epochs"]) == (4, 2, 2.0)
        assert [entry["epoch"] for entry in record["dev_per_epoch"]] == [1.0, 2.0]
        final = json.loads((run_dir / "all_results.json").read_text())
        for key in ("eval_sst_accuracy", "eval_para_accuracy", "eval_sts_pearson", "eval_overall"):
            assert record[key] == final[key]
            assert record[key] in [entry[key] for entry in record["dev_per_epoch"]]  # the best epoch's, reloaded
        assert record["train_runtime"] == final["train_runtime"] > 0
        assert record["time_per_epoch_s"] == pytest.approx(record["train_runtime"] / 2)
        assert record["wall_time_s"] >= record["train_runtime"]
        assert record["loss_per_step"]["step"] == [1, 2, 3, 4]
        assert all(math.isfinite(v) for v in record["loss_per_step"]["loss"] + record["loss_per_step"]["loss_sts"])
        assert [entry["epoch"] for entry in record["loss_per_epoch"]] == [1, 2]
        assert record["loss_per_epoch"][0]["loss"] == pytest.approx(sum(record["loss_per_step"]["loss"][:2]) / 2)

    assert records["naive"]["surgery"] is None
    surgery = records["combined"]["surgery"]
    history = json.loads((output_dir / "combined-seed0" / "trainer_state.json").read_text())["log_history"]
    logged = plot_multitask.per_epoch(history, plot_multitask.ADJUSTMENTS, reduce="sum")
    assert len(logged) == surgery["ordered_pairs"] == 6
    for item in surgery["per_epoch"]:  # 2 steps x 6 ordered pairs compared per epoch
        assert (item["steps"], item["pairs_compared"]) == (2, 12)
        assert item["by_pair"] == {pair: by_epoch[item["epoch"]] for pair, by_epoch in logged.items()}
        assert item["fraction"] == pytest.approx(item["adjustments"] / 12)
    assert surgery["pairs_compared_total"] == 24

    table = json.loads((results_dir / "table.json").read_text())
    assert set(table["experiments"]) == {"naive", "combined"}
    assert table["experiments"]["combined"]["metrics"]["overall"]["paper"] == 0.671
    assert table["experiments"]["combined"]["metrics"]["overall"]["std"] is None  # one seed
    assert [(d["a"], d["b"]) for d in table["differences"]] == [("combined", "naive")] * 4
    text = (results_dir / "table.md").read_text()
    assert "| combined | 1 |" in text and "(0.671)" in text and "needs at least 2 seeds" in text
    for name in ("losses.png", "conflicts.png"):
        assert (results_dir / name).read_bytes().startswith(b"\x89PNG")

    # A second invocation runs nothing.
    logs = {p: p.stat().st_mtime_ns for p in output_dir.glob("*.log")}
    outcome = reproduce_paper.main(argv)
    assert outcome["ran"] == outcome["gathered"] == [] and outcome["skipped"] == ["naive-seed0", "combined-seed0"]
    assert len(logs) == 2 and {p: p.stat().st_mtime_ns for p in output_dir.glob("*.log")} == logs

    # An invocation for some presets only (e.g. one of two streams side by side) writes the table of every run found.
    outcome = reproduce_paper.main([*argv, "--presets", "naive"])
    assert outcome["skipped"] == ["naive-seed0"]
    assert json.loads((results_dir / "table.json").read_text())["experiments"].keys() == {"naive", "combined"}

    # A finished run without its JSON is gathered from its output dir, not trained again.
    (results_dir / "runs" / "naive-seed0.json").unlink()
    outcome = reproduce_paper.main(argv)
    assert outcome["gathered"] == ["naive-seed0"] and outcome["ran"] == []
    gathered = json.loads((results_dir / "runs" / "naive-seed0.json").read_text())
    assert {k: v for k, v in gathered.items() if k != "gathered"} == {
        k: v for k, v in records["naive"].items() if k != "gathered"
    }

    # A run killed after a checkpoint continues from its last complete one; a later folder a kill cut short is
    # passed over. (Resuming itself is run_multitask.py's, tested there; a real kill was checked by hand.)
    run = next(r for r in reproduce_paper.build_runs(reproduce_paper.parse_args(argv)[0], []) if r.row == "combined")
    (results_dir / "runs" / "combined-seed0.json").unlink()
    (run.output_dir / "all_results.json").unlink()
    # Which checkpoints the run kept depends on which epoch of the tiny model scored best (`--save_total_limit 1
    # --load_best_model_at_end` keeps the best and deletes the others), so the expected one is read from the run.
    kept = sorted(run.output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    assert kept and all((path / "run_config.json").is_file() for path in kept)  # complete, every one
    (run.output_dir / "checkpoint-6").mkdir()
    assert runner.run_state(run) == "resume"
    next_argv, checkpoint = runner.attempt_argv(run)
    assert checkpoint == kept[-1]
    assert next_argv == run.argv + ["--resume_from_checkpoint", str(checkpoint)]
    # Without a complete checkpoint there is nothing to keep: the run starts over in its output dir.
    for path in run.output_dir.glob("checkpoint-*"):
        shutil.rmtree(path)
    assert runner.run_state(run) == "start"
    assert runner.attempt_argv(run) == (run.argv + ["--overwrite_output_dir", "true"], None)
    shutil.rmtree(run.output_dir)
    assert runner.attempt_argv(run) == (run.argv, None)

    # Another budget is refused, not mixed into the table.
    with pytest.raises(ValueError, match="do not match"):
        reproduce_paper.main([*argv, "--num_train_epochs", "2"])

    # Table and figures alone, from the run JSONs.
    for name in ("table.md", "table.json", "losses.png", "conflicts.png"):
        (results_dir / name).unlink()
    write_json_atomically(results_dir / "runs" / "combined-seed0.json", records["combined"])
    outcome = reproduce_paper.main(["--table_only", "--results_dir", str(results_dir)])
    assert sorted(p.name for p in outcome["written"]) == ["conflicts.png", "losses.png", "table.json", "table.md"]
    assert json.loads((results_dir / "table.json").read_text())["experiments"].keys() == {"naive", "combined"}


def record(preset: str, seed: int, overall: float, sts: float = 0.5, surgery: bool = False) -> dict:
    """A run JSON by hand: one value per metric, two epochs of summarised logs."""
    history = []
    for step in (1, 2, 3, 4):
        entry = {"step": step, "epoch": step / 2, "loss": 4.0 - step / 2 + seed / 10, "loss_sst": 1.6}
        if surgery:
            entry.update(
                {f"surgery/{a}-{b}/adjustments": float(step == 1) for a, b in (("sst", "para"), ("para", "sst"))}
            )
        history.append(entry)
    command = ["python", "run_multitask.py", "--preset", preset, "--seed", str(seed), "--output_dir", f"out/{preset}"]
    command += [*PRESETS[preset].reproduction_flags, *runner.shared_flags(1)]
    return {
        "preset": preset, "seed": seed, "command": shlex.join(command), "commit": "0" * 40, "dirty": False,
        "eval_sst_accuracy": 0.4, "eval_para_accuracy": 0.7, "eval_sts_pearson": sts, "eval_overall": overall,
        "steps": 4, "epochs": 2.0, "time_per_epoch_s": 600.0 + seed, "run_time_s": 1200.0, "wall_time_s": 1300.0,
        "mean_eval_runtime_per_epoch_s": 60.0, "machine": {"cpu_count": 2},
        **summarize_history(history),
    }  # fmt: skip


def test_table_statistics(tmp_path):
    records = [
        *(record("naive", seed, overall) for seed, overall in enumerate([0.50, 0.52, 0.54])),
        # +0.10 against naive with standard deviations 0.02 and 0.02: larger than the spread 0.04.
        *(record("cosine", seed, overall, sts=0.8) for seed, overall in enumerate([0.60, 0.62, 0.64])),
        # +0.03 with standard deviations 0.04 and 0.02 (naive): not larger than the spread 0.06.
        *(record("combined", seed, overall, surgery=True) for seed, overall in enumerate([0.51, 0.55, 0.59])),
    ]
    table = paper_table.build_table(records)
    assert table["budget"] is not None and table["budgets_differ"] is None
    overall = table["experiments"]["combined"]["metrics"]["overall"]
    assert overall["mean"] == pytest.approx(0.55) and overall["std"] == pytest.approx(0.04)
    assert overall["values"] == [0.51, 0.55, 0.59] and overall["paper"] == 0.671
    assert table["experiments"]["cosine"]["metrics"]["sts"]["std"] == 0  # exact: equal values
    timing = table["experiments"]["naive"]["timings"]["time_per_epoch_s"]
    assert timing["mean"] == pytest.approx(601.0) and timing["std"] == pytest.approx(1.0)

    differences = {(d["a"], d["b"], d["metric"]): d for d in table["differences"]}
    assert {(a, b) for a, b, _ in differences} == {("cosine", "naive"), ("combined", "naive"), ("combined", "cosine")}
    cosine = differences[("cosine", "naive", "overall")]
    assert cosine["diff"] == pytest.approx(0.10) and cosine["spread"] == pytest.approx(0.04)
    assert cosine["larger_than_spread"] and cosine["welch_p"] < 0.01
    assert cosine["paper_diff"] == pytest.approx(0.673 - 0.542)
    combined = differences[("combined", "naive", "overall")]
    assert combined["diff"] == pytest.approx(0.03) and combined["spread"] == pytest.approx(0.06)
    assert not combined["larger_than_spread"] and combined["welch_p"] > 0.05
    assert differences[("cosine", "naive", "sst")]["larger_than_spread"] is False  # identical values: no difference

    conflicts = table["experiments"]["combined"]["conflicts"]["per_epoch"]
    assert [(c["epoch"], c["adjustments"]["mean"], c["pairs_compared"]) for c in conflicts] == [
        (1, 2.0, 4),
        (2, 0.0, 4),
    ]
    assert conflicts[0]["fraction"] == 0.5 and conflicts[0]["by_pair"] == {"para-sst": 1.0, "sst-para": 1.0}

    text = paper_table.format_table(table)
    assert "| cosine | 3 | 0.400 ± 0.000 (0.492) | 0.700 ± 0.000 (0.769) | 0.800 ± 0.000 (0.757) |" in text
    assert "0.550 ± 0.040 (0.671)" in text
    assert re.search(r"\| cosine − naive \|.*\*\*\+0\.100 vs 0\.040\*\*", text)
    assert (
        "Larger than the seed spread: cosine − naive, STS Pearson: +0.300 (paper +0.393); cosine − naive, overall"
        in text
    )
    assert "| combined | 1 | 2 ± 0 | 4 | 50.00 |" in text

    paths = reproduce_paper.write_table_and_figures(records, tmp_path)
    assert [p.name for p in paths] == ["table.md", "table.json", "losses.png", "conflicts.png"]

    # Runs of different budgets are flagged.
    other = record("pals", 0, 0.5)
    other["command"] += " --learning_rate 1e-5"
    assert paper_table.build_table([*records, other])["budgets_differ"] is not None


def test_summarize_history_counts_the_steps_of_each_log_window():
    """Logs every 2 steps, 3 steps an epoch, resumed from the checkpoint at step 3 after a kill at step 5."""
    pair = "surgery/sst-para/adjustments"
    history = [
        {"step": 2, "epoch": 2 / 3, "loss": 3.0, pair: 1.0},
        {"step": 3, "epoch": 1.0, "eval_sst_accuracy": 0.3, "eval_sst_runtime": 1.5},
        {"step": 3, "epoch": 1.0, "eval_overall": 0.3},
        {"step": 4, "epoch": 4 / 3, "loss": 2.0, pair: 1.0},  # steps 4 only: the log before it was lost in the kill
        {"step": 6, "epoch": 2.0, "loss": 1.0, pair: 0.0},
    ]
    summary = summarize_history(history, resume_steps=[3])
    assert steps_per_epoch(history) == 3
    assert summary["surgery"]["per_log"]["steps"] == [2, 1, 2]
    assert [(e["epoch"], e["steps"], e["adjustments"]) for e in summary["surgery"]["per_epoch"]] == [
        (1, 2, 1.0),
        (2, 3, 1.0),
    ]
    assert summary["dev_per_epoch"] == [{"epoch": 1.0, "eval_sst_accuracy": 0.3, "eval_overall": 0.3}]
    assert summary["eval_runtime_per_epoch_s"] == [{"epoch": 1, "seconds": 1.5}]
    assert summary["loss_per_epoch"] == [{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 1.5}]


def test_commit_results_commits_only_the_given_files(tmp_path, monkeypatch):
    for variable in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(variable, "test")
    for variable in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(variable, "test@example.com")

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("runs/\n")  # as the project's
    (tmp_path / "other.txt").write_text("staged, not to be committed\n")
    git("add", ".gitignore", "other.txt")
    result = tmp_path / "results" / "paper" / "runs" / "naive-seed0.json"
    result.parent.mkdir(parents=True)
    result.write_text("{}\n")
    assert runner.commit_results([result], "Reproduce the paper: naive-seed0")
    assert git("show", "--name-only", "--format=%s", "HEAD").split() == [
        "Reproduce", "the", "paper:", "naive-seed0", "results/paper/runs/naive-seed0.json",
    ]  # fmt: skip
    assert "A  other.txt" in git("status", "--porcelain")
