#!/usr/bin/env python
# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Reproduces the paper's Table 1 (dev), Figure 4 (training loss) and Figure 5 (GradVac adjustments): the six presets
`baseline`, `naive`, `gradvac`, `pals`, `cosine`, `combined`, once per seed, each through `run_multitask.py`.

    python experiments/reproduce_paper.py --seeds 0 1 2                 # train what is missing, then table and figures
    python experiments/reproduce_paper.py --seeds 0 1 --dry_run         # the 12 run_multitask.py commands, one a line
    python experiments/reproduce_paper.py --table_only                  # table and figures from results/paper/runs

Each run is an ordinary command, run from the repository root (the seeds outermost, so that an interrupted
reproduction has whole seeds first):

    python run_multitask.py --preset naive --seed 0 --output_dir outputs/paper/naive-seed0 --do_train --do_eval ...

Flags this script does not know are appended to every run's command, after the shared ones (so they win): e.g.
`--model_name_or_path`, `--max_train_samples`, `--max_eval_samples`, `--max_steps`, `--logging_steps`.

## One budget

Every run reads the same data with the same batch size (8 examples of each task per step), the same round-robin
schedule, the same number of epochs, the same dev evaluation after every epoch, and keeps its best checkpoint by
`eval_overall`; for a given seed, every run sees the same batches. The presets differ only in what the paper varies
(PALs, STS head, gradient surgery, frozen encoder); the learning rate is the Trainer's 5e-5, except `baseline`, which
keeps its frozen-encoder learning rate of 1e-3.

`baseline` is given `--task_schedule round_robin` instead of its preset's `sequential`. With the encoder frozen and
one head per task, no trainable parameter is shared, so the three tasks are trained independently under either
schedule: it is still the paper's "separate" baseline. What `sequential` changes is the budget: one pass over each
task's own rows (SST 1,068 steps of 8, STS 756, Quora 1,771), where a round-robin epoch gives every task 1,771 steps
of 8 examples (the smaller sets restart with a fresh shuffle), as in every other run.

## Resuming

For each run, in this order: its results JSON exists: skipped. Its output dir holds a finished run
(`all_results.json` with training and dev metrics): the results are gathered from it. It holds a complete checkpoint:
the command runs again with `--resume_from_checkpoint <that checkpoint>` (model, optimizer, schedule, data position
and the GradVac state are restored; a checkpoint a kill cut short is passed over). Otherwise the run starts, with
`--overwrite_output_dir true` if a killed attempt left files but no complete checkpoint (nothing to keep). A results
JSON or an output dir made by another command is an error, never mixed into the table. Each attempt is recorded
beside the run's output dir (`run_multitask.py` wants that dir to itself), in `<preset>-seed<k>.attempts.json`, its
output in `<preset>-seed<k>.log`. `--commit_results` commits each run's JSON as soon as it is written (`git add -f`:
the project's `.gitignore` has `runs/`).

## What is recorded

`<results_dir>/runs/<preset>-seed<k>.json`: the command, the code's commit (and whether tracked files outside
`results/` had changes), steps, the dev metrics after every epoch (from `trainer_state.json`), the final dev metrics
(the best epoch's, reloaded), the training loss per logged step and per epoch (mean of the logged values; a log
window is counted in the epoch it ends in), and for gradient-surgery runs the adjustments per ordered task pair per
epoch (`surgery/<i>-<j>/adjustments` summed by `plot_multitask.per_epoch`) against the pairs compared: the logged
steps times the ordered pairs (6 for 3 tasks; with `--surgery_granularity layer` or `tensor` the adjustments are
summed over parameter groups, the pairs counted once a step). The paper's "~2,000 of 54,000" counts 3 per step
(18,000 x 3); the fraction is what compares.

Timing: `train_runtime` is the Trainer's own measure, summed over the attempts that finished training; it covers the
training loop including the dev evaluation and checkpoint after each epoch, not loading and tokenising.
`time_per_epoch_s` is that per step times the steps of an epoch (so a resumed run is not counted twice);
`eval_runtime_per_epoch_s` is the dev evaluation's share; `wall_time_s` sums every attempt's whole process.

## Statistics

Mean and sample standard deviation (n - 1) over seeds. A difference between two experiments counts as larger than
the seed spread when `|mean_a - mean_b| > s_a + s_b`, the sum of the two standard deviations (conservative, and
meaningful with 2 or 3 seeds); Welch's t-test p-value is given beside it for reference. Compared: every experiment
against `naive`, and `combined` against `cosine`.
"""

import argparse
import json
import logging
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import plot_multitask  # noqa: E402


logger = logging.getLogger("reproduce_paper")

PRESETS = ("baseline", "naive", "gradvac", "pals", "cosine", "combined")
SURGERY_PRESETS = ("gradvac", "combined")
# The preset's own flags beyond `--preset`: see "One budget" above.
PRESET_FLAGS = {"baseline": ["--task_schedule", "round_robin"]}
METRICS = {
    "sst": "eval_sst_accuracy",
    "para": "eval_para_accuracy",
    "sts": "eval_sts_pearson",
    "overall": "eval_overall",
}
METRIC_TITLES = {"sst": "SST accuracy", "para": "Quora accuracy", "sts": "STS Pearson", "overall": "overall"}
# The paper's Table 1 (dev; bert-base, 141k Quora pairs, lr 1e-5, 10 epochs).
PAPER_TABLE = {
    "baseline": {"sst": 0.516, "para": 0.783, "sts": 0.361, "overall": 0.553},
    "naive": {"sst": 0.498, "para": 0.765, "sts": 0.364, "overall": 0.542},
    "gradvac": {"sst": 0.494, "para": 0.771, "sts": 0.367, "overall": 0.544},
    "pals": {"sst": 0.501, "para": 0.773, "sts": 0.363, "overall": 0.546},
    "cosine": {"sst": 0.492, "para": 0.769, "sts": 0.757, "overall": 0.673},
    "combined": {"sst": 0.499, "para": 0.787, "sts": 0.727, "overall": 0.671},
}
PAPER_NAMES = {
    "baseline": "Baseline (separate; frozen encoder)",
    "naive": "Naive multitask",
    "gradvac": "Gradient Vaccine",
    "pals": "PALs",
    "cosine": "Cosine similarity",
    "combined": "Combined (PALs + GradVac + cosine)",
}
PAPER_EPOCH_MINUTES = {"naive": 47, "combined": 120}  # one AWS GPU, bert-base
SPREAD_RULE = "|mean_a - mean_b| > s_a + s_b (sample standard deviations over seeds)"
# Set by this script for every run; anything else may be passed through.
MANAGED_FLAGS = (
    "--preset",
    "--seed",
    "--output_dir",
    "--num_train_epochs",
    "--resume_from_checkpoint",
    "--overwrite_output_dir",
)
SURGERY_STATE_NAME = "gradient_surgery.pt"  # as MultitaskTrainer saves it in every checkpoint


def shared_flags(num_train_epochs: float) -> list[str]:
    """The budget and evaluation every run shares."""
    return [
        "--do_train", "--do_eval",
        "--num_train_epochs", format_number(num_train_epochs),
        "--per_device_train_batch_size", "8",
        "--eval_strategy", "epoch",
        "--save_strategy", "epoch",
        "--save_total_limit", "1",
        "--load_best_model_at_end",
        "--logging_steps", "50",
        "--report_to", "none",
        "--disable_tqdm", "true",
    ]  # fmt: skip


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass
class Run:
    preset: str
    seed: int
    output_dir: Path  # this run's own output dir
    argv: list[str]  # ["python", "run_multitask.py", ...]
    results_file: Path

    @property
    def name(self) -> str:
        return f"{self.preset}-seed{self.seed}"

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    @property
    def attempts_file(self) -> Path:
        return self.output_dir.with_name(f"{self.name}.attempts.json")

    @property
    def log_file(self) -> Path:
        return self.output_dir.with_name(f"{self.name}.log")

    @property
    def uses_surgery(self) -> bool:
        default = "gradvac" if self.preset in SURGERY_PRESETS else "none"
        return flag_value(self.argv, "--gradient_surgery", default) != "none"


def flag_value(argv: list[str], flag: str, default: str | None = None) -> str | None:
    """The last value given to `flag` (`--flag value` or `--flag=value`), as argparse reads it."""
    value = default
    for index, item in enumerate(argv):
        if item == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif item.startswith(flag + "="):
            value = item.split("=", 1)[1]
    return value


def command_path(path: Path) -> str:
    """A path as a command run from the repository root reads it: relative inside the repository, else absolute."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def build_runs(args, passthrough: list[str]) -> list[Run]:
    runs = []
    for seed in args.seeds:
        for preset in args.presets:
            output_dir = args.output_dir / f"{preset}-seed{seed}"
            argv = [
                "python", "run_multitask.py",
                "--preset", preset,
                "--seed", str(seed),
                "--output_dir", command_path(output_dir),
                *PRESET_FLAGS.get(preset, []),
                *shared_flags(args.num_train_epochs),
                *passthrough,
            ]  # fmt: skip
            runs.append(Run(preset, seed, output_dir, argv, args.results_dir / "runs" / f"{preset}-seed{seed}.json"))
    return runs


# ---- Git and machine ----


def git_state(repo: Path = REPO) -> tuple[str | None, bool | None]:
    """HEAD's commit, and whether tracked files outside `results/` differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit.stdout.strip(), bool(status.stdout.strip())


def commit_results(paths: list[Path], message: str) -> bool:
    """`git add -f` and `git commit` of just `paths`, in the repository that holds them; other staged changes stay."""
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=paths[0].parent, capture_output=True, text=True, check=False
    )
    if top.returncode != 0:
        logger.warning(f"--commit_results: {paths[0].parent} is not in a git repository; nothing committed.")
        return False
    names = [str(path.resolve()) for path in paths]
    for command in (["git", "add", "-f", "--", *names], ["git", "commit", "-q", "-m", message, "--", *names]):
        result = subprocess.run(command, cwd=top.stdout.strip(), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            logger.warning(
                f"--commit_results: `{shlex.join(command)}` failed: {(result.stderr or result.stdout).strip()}"
            )
            return False
    return True


def machine() -> dict:
    versions = {}
    for package in ("torch", "transformers", "accelerate", "datasets"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    # Thread count changes both the speed and, through reduction order, the last digits of the results.
    threads = os.environ.get("OMP_NUM_THREADS")
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "omp_num_threads": threads, **versions}


def thread_count(record: dict) -> int | None:
    """The threads a run trained on: its OMP_NUM_THREADS, or every core where that was unset; None for a run from
    before the thread count was recorded."""
    machine_info = record.get("machine") or {}
    if "omp_num_threads" not in machine_info:
        return None
    return int(machine_info["omp_num_threads"] or machine_info.get("cpu_count") or 1)


# ---- Running ----


def read_json(path: Path, default=None):
    return json.loads(path.read_text()) if path.is_file() else default


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def last_checkpoint(run: Run) -> Path | None:
    """
    The last complete checkpoint in the run's output dir, as the trainer judges it (`trainer.checkpoints`: every file
    its save listed is there, in full); with a trainer that does not mark complete checkpoints, one holding
    `trainer_state.json` (and the GradVac state for a surgery run). Checkpoints cut short by a kill are passed over.
    """
    if not run.output_dir.is_dir():
        return None
    try:
        from trainer.checkpoints import find_checkpoints
    except ImportError:
        find_checkpoints = None
    if find_checkpoints is not None:
        complete, _ = find_checkpoints(str(run.output_dir))
        return Path(complete[-1]) if complete else None
    folders = [p for p in run.output_dir.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    required = ["trainer_state.json"] + ([SURGERY_STATE_NAME] if run.uses_surgery else [])
    complete = [p for p in folders if all((p / name).is_file() for name in required)]
    return max(complete, key=checkpoint_step) if complete else None


def supports_overwrite() -> bool:
    """Whether `run_multitask.py` has `--overwrite_output_dir` (and so refuses an output dir that is not empty)."""
    from trainer.training_args import MultitaskTrainingArguments

    return "overwrite_output_dir" in MultitaskTrainingArguments.__dataclass_fields__


def is_finished(output_dir: Path) -> bool:
    results = read_json(output_dir / "all_results.json", {})
    return "train_runtime" in results and "eval_overall" in results and (output_dir / "trainer_state.json").is_file()


def run_state(run: Run) -> str:
    """`done` (results JSON exists), `finished` (gather from the output dir), `resume` or `start`."""
    if run.results_file.is_file():
        return "done"
    if is_finished(run.output_dir):
        return "finished"
    return "resume" if last_checkpoint(run) is not None else "start"


def check_commands(runs: list[Run]) -> None:
    """Refuses results or output dirs that another command made: they would not share the budget."""
    problems = []
    for run in runs:
        record = read_json(run.results_file)
        if record is not None and record.get("command") != run.command:
            problems.append(f"{run.results_file} was made by `{record.get('command')}`")
        attempts = read_json(run.attempts_file, []) if run.output_dir.is_dir() else []
        if attempts and attempts[-1]["command"] != run.command:
            problems.append(f"{run.output_dir} was made by `{attempts[-1]['command']}` (see {run.attempts_file})")
    if problems:
        raise ValueError(
            "Existing results do not match this invocation's commands (another budget or flags):\n  "
            + "\n  ".join(problems)
            + "\nMove them away, or choose another --output_dir / --results_dir."
        )


def attempt_argv(run: Run) -> tuple[list[str], Path | None]:
    """The command of the next attempt at an unfinished run, and the checkpoint it resumes from."""
    checkpoint = last_checkpoint(run)
    if checkpoint is not None:
        # The checkpoint by name (not `true`): the one judged complete here, whatever later folder a kill left.
        return run.argv + ["--resume_from_checkpoint", command_path(checkpoint)], checkpoint
    if run.output_dir.is_dir() and any(run.output_dir.iterdir()) and supports_overwrite():
        return run.argv + ["--overwrite_output_dir", "true"], None  # a killed attempt's leftovers: nothing to keep
    return run.argv, None


def execute(run: Run) -> int:
    """Runs (or resumes) one run as a subprocess from the repository root; records the attempt."""
    run.output_dir.parent.mkdir(parents=True, exist_ok=True)
    argv, checkpoint = attempt_argv(run)
    commit, dirty = git_state()
    attempts_file = run.attempts_file
    # Attempts whose output dir is gone left nothing: the record starts again with the dir.
    attempts = read_json(attempts_file, []) if run.output_dir.is_dir() else []
    attempt = {
        "command": run.command,
        "resumed_from_step": checkpoint_step(checkpoint) if checkpoint is not None else 0,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": dirty,
        "wall_time_s": None,
        "returncode": None,
        "train_runtime": None,
        "end_step": None,
    }
    attempts.append(attempt)
    write_json(attempts_file, attempts)
    log_file = run.log_file
    action = f"resuming from {checkpoint.name}" if checkpoint is not None else "starting"
    logger.info(f"{run.name}: {action}; log in {log_file}")
    start = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        with log_file.open("a") as log:
            log.write(f"\n$ {shlex.join(argv)}\n")
            log.flush()
            process = subprocess.run(
                [sys.executable, *argv[1:]], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, check=False
            )
        attempt["returncode"] = process.returncode
    finally:
        attempt["wall_time_s"] = round(time.time() - start, 1)
        train_results = run.output_dir / "train_results.json"
        state = run.output_dir / "trainer_state.json"
        if train_results.is_file() and train_results.stat().st_mtime >= start and state.is_file():
            attempt["train_runtime"] = read_json(train_results)["train_runtime"]
            attempt["end_step"] = read_json(state)["global_step"]
        write_json(attempts_file, attempts)
    if process.returncode != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-20:])
        logger.error(f"{run.name}: exit status {process.returncode}; the end of {log_file}:\n{tail}")
    return process.returncode


# ---- Gathering a run's results ----


def epoch_of(entry: dict) -> int:
    """The epoch a log entry belongs to, as `plot_multitask.per_epoch` counts it: epoch 1 covers (0, 1]."""
    return max(1, math.ceil(entry["epoch"]))


def steps_per_epoch(history: list[dict]) -> int:
    for entry in reversed(history):
        if entry.get("step", 0) > 0 and entry.get("epoch", 0) > 0:
            return round(entry["step"] / entry["epoch"])
    raise ValueError("The log history has no entry with a step and an epoch.")


def log_windows(entries: list[dict], resume_steps: list[int]) -> list[int]:
    """Steps each training-log entry covers: since the previous log, or since the checkpoint a run resumed from."""
    windows, previous = [], 0
    for entry in entries:
        start = max([previous] + [s for s in resume_steps if s < entry["step"]])
        windows.append(entry["step"] - start)
        previous = entry["step"]
    return windows


def summarize_history(history: list[dict], resume_steps: list[int] | None = None) -> dict:
    """Dev metrics, losses and surgery statistics per epoch (and per logged step) from a `log_history`."""
    resume_steps = resume_steps or []
    dev = {}
    for key, points in plot_multitask.dev_metrics(history).items():
        for epoch, value in points:
            dev.setdefault(round(epoch, 6), {})[key] = value
    eval_runtime = {}
    for by_epoch in plot_multitask.per_epoch(history, r"^eval_\w+_runtime$", reduce="sum").values():
        for epoch, seconds in by_epoch.items():
            eval_runtime[epoch] = eval_runtime.get(epoch, 0.0) + seconds

    train_logs = sorted((e for e in history if "loss" in e and "step" in e), key=lambda e: e["step"])
    loss_keys = sorted({key for entry in train_logs for key in entry if re.fullmatch(r"loss(_\w+)?", key)})
    loss_per_step = {"step": [e["step"] for e in train_logs], "epoch": [e["epoch"] for e in train_logs]}
    loss_per_step.update({key: [e.get(key) for e in train_logs] for key in loss_keys})
    loss_per_epoch = {}
    for key, by_epoch in plot_multitask.per_epoch(history, r"^loss(_\w+)?$", reduce="mean").items():
        for epoch, value in by_epoch.items():
            loss_per_epoch.setdefault(epoch, {})[key] = value

    summary = {
        "dev_per_epoch": [{"epoch": epoch, **values} for epoch, values in sorted(dev.items())],
        "eval_runtime_per_epoch_s": [{"epoch": e, "seconds": round(s, 2)} for e, s in sorted(eval_runtime.items())],
        "loss_per_epoch": [{"epoch": epoch, **values} for epoch, values in sorted(loss_per_epoch.items())],
        "loss_per_step": loss_per_step,
        "surgery": None,
    }
    adjustments = plot_multitask.per_epoch(history, plot_multitask.ADJUSTMENTS, reduce="sum")
    if adjustments:
        surgery_logs = [e for e in train_logs if any(plot_multitask.ADJUSTMENTS.match(key) for key in e)]
        pairs = sorted(adjustments)
        windows = log_windows(train_logs, resume_steps)
        window_of = {id(entry): steps for entry, steps in zip(train_logs, windows)}
        per_log = {"step": [], "steps": [], "adjustments": [], "pairs_compared": []}
        steps_by_epoch = {}
        for entry in surgery_logs:
            steps = window_of[id(entry)]
            steps_by_epoch[epoch_of(entry)] = steps_by_epoch.get(epoch_of(entry), 0) + steps
            per_log["step"].append(entry["step"])
            per_log["steps"].append(steps)
            per_log["adjustments"].append(sum(entry.get(f"surgery/{pair}/adjustments", 0.0) for pair in pairs))
            per_log["pairs_compared"].append(steps * len(pairs))
        per_epoch = []
        for epoch in sorted(steps_by_epoch):
            by_pair = {pair: adjustments[pair].get(epoch, 0.0) for pair in pairs}
            compared = steps_by_epoch[epoch] * len(pairs)
            total = sum(by_pair.values())
            per_epoch.append({
                "epoch": epoch, "steps": steps_by_epoch[epoch], "pairs_compared": compared, "adjustments": total,
                "fraction": total / compared if compared else None, "by_pair": by_pair,
            })  # fmt: skip
        total_adjusted = sum(item["adjustments"] for item in per_epoch)
        total_compared = sum(item["pairs_compared"] for item in per_epoch)
        summary["surgery"] = {
            "ordered_pairs": len(pairs),
            "per_epoch": per_epoch,
            "adjustments_total": total_adjusted,
            "pairs_compared_total": total_compared,
            "fraction_total": total_adjusted / total_compared if total_compared else None,
            "per_log": per_log,
        }
    return summary


def gather(run: Run) -> dict:
    """The run's results JSON, from its output dir (`all_results.json`, `trainer_state.json`, the attempts)."""
    results = read_json(run.output_dir / "all_results.json")
    state = read_json(run.output_dir / "trainer_state.json")
    attempts = read_json(run.attempts_file, [])
    history = state["log_history"]
    steps = state["global_step"]
    epoch_steps = steps_per_epoch(history)

    segments = [a for a in attempts if a["train_runtime"] is not None and a["end_step"] > a["resumed_from_step"]]
    if segments:
        train_runtime = sum(a["train_runtime"] for a in segments)
        timed_steps = sum(a["end_step"] - a["resumed_from_step"] for a in segments)
    else:  # made outside this script: assume one uninterrupted attempt
        train_runtime, timed_steps = results["train_runtime"], steps
    seconds_per_step = train_runtime / timed_steps if timed_steps else None
    if attempts:
        commit, dirty = attempts[-1]["commit"], attempts[-1]["dirty"]
    else:
        commit, dirty = git_state()
    summary = summarize_history(history, [a["resumed_from_step"] for a in attempts if a["resumed_from_step"] > 0])
    eval_seconds = [item["seconds"] for item in summary["eval_runtime_per_epoch_s"]]
    record = {
        "preset": run.preset,
        "seed": run.seed,
        "command": run.command,
        "commit": commit,
        "dirty": dirty,
        "output_dir": command_path(run.output_dir),
        "steps": steps,
        "steps_per_epoch": epoch_steps,
        "epochs": steps / epoch_steps,
        "train_samples": results.get("train_samples"),
        "train_runtime": train_runtime,
        "seconds_per_step": seconds_per_step,
        "time_per_epoch_s": seconds_per_step * epoch_steps if seconds_per_step else None,
        "run_time_s": seconds_per_step * steps if seconds_per_step else None,
        "mean_eval_runtime_per_epoch_s": sum(eval_seconds) / len(eval_seconds) if eval_seconds else None,
        "wall_time_s": sum(a["wall_time_s"] or 0.0 for a in attempts) or None,
        "attempts": len(attempts),
        "resumed_from_steps": [a["resumed_from_step"] for a in attempts if a["resumed_from_step"] > 0],
        "best_global_step": state.get("best_global_step"),
        **{key: results[key] for key in METRICS.values()},
        "train_loss": results.get("train_loss"),
        "surgery_granularity": flag_value(run.argv, "--surgery_granularity", "model") if summary["surgery"] else None,
        "machine": machine(),
        "gathered": datetime.now(UTC).isoformat(timespec="seconds"),
        **summary,
    }
    return record


# ---- Table ----


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1; None for one value), in exact arithmetic: equal values give 0."""
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Welch's t-test p-value; None with fewer than 2 values a side, or no variance at all."""
    if len(a) < 2 or len(b) < 2 or statistics.variance(a) + statistics.variance(b) == 0:
        return None
    from scipy.stats import ttest_ind

    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def budget_of(record: dict) -> list[str]:
    """A run's command without what names the run (preset, seed, output dir) and the preset's own flags."""
    argv = shlex.split(record["command"])[2:]
    kept, index = [], 0
    while index < len(argv):
        if argv[index] in ("--preset", "--seed", "--output_dir"):
            index += 2
            continue
        kept.append(argv[index])
        index += 1
    own = PRESET_FLAGS.get(record["preset"], [])
    for start in range(len(kept) - len(own) + 1) if own else ():
        if kept[start : start + len(own)] == own:
            del kept[start : start + len(own)]
            break
    return kept


def comparisons(presets: list[str]) -> list[tuple[str, str]]:
    pairs = [(preset, "naive") for preset in presets if preset != "naive" and "naive" in presets]
    if "combined" in presets and "cosine" in presets:
        pairs.append(("combined", "cosine"))
    return pairs


def build_table(records: list[dict]) -> dict:
    """Per experiment, mean and spread over seeds of the metrics and timings; differences against the spread."""
    presets = [p for p in PRESETS if any(r["preset"] == p for r in records)]
    by_preset = {p: sorted((r for r in records if r["preset"] == p), key=lambda r: r["seed"]) for p in presets}
    budgets = {shlex.join(budget_of(r)) for r in records}
    experiments = {}
    for preset, runs in by_preset.items():
        metrics = {}
        for name, key in METRICS.items():
            values = [r[key] for r in runs]
            mean, std = mean_std(values)
            metrics[name] = {"mean": mean, "std": std, "values": values, "paper": PAPER_TABLE[preset][name]}
        timings = {}
        for key in ("time_per_epoch_s", "run_time_s", "wall_time_s", "mean_eval_runtime_per_epoch_s"):
            values = [r[key] for r in runs if r.get(key) is not None]
            mean, std = mean_std(values)
            timings[key] = {"mean": mean, "std": std}
        experiment = {
            "name": PAPER_NAMES[preset],
            "seeds": [r["seed"] for r in runs],
            "metrics": metrics,
            "steps": sorted({r["steps"] for r in runs}),
            "epochs": sorted({r["epochs"] for r in runs}),
            "timings": timings,
            "threads": [str(thread_count(r) or "?") for r in runs],
            "paper_epoch_minutes": PAPER_EPOCH_MINUTES.get(preset),
            "conflicts": None,
        }
        surgery_runs = [r for r in runs if r.get("surgery")]
        if surgery_runs:
            epochs = sorted({item["epoch"] for r in surgery_runs for item in r["surgery"]["per_epoch"]})
            per_epoch = []
            for epoch in epochs:
                items = [i for r in surgery_runs for i in r["surgery"]["per_epoch"] if i["epoch"] == epoch]
                adjusted, compared = (
                    mean_std([i["adjustments"] for i in items]),
                    mean_std([i["pairs_compared"] for i in items]),
                )
                pairs = sorted({pair for i in items for pair in i["by_pair"]})
                per_epoch.append({
                    "epoch": epoch,
                    "adjustments": {"mean": adjusted[0], "std": adjusted[1]},
                    "pairs_compared": compared[0],
                    "fraction": adjusted[0] / compared[0] if compared[0] else None,
                    "by_pair": {pair: mean_std([i["by_pair"].get(pair, 0.0) for i in items])[0] for pair in pairs},
                })  # fmt: skip
            experiment["conflicts"] = {"seeds": [r["seed"] for r in surgery_runs], "per_epoch": per_epoch}
        experiments[preset] = experiment

    differences = []
    for a, b in comparisons(presets):
        for name, key in METRICS.items():
            ma, mb = experiments[a]["metrics"][name], experiments[b]["metrics"][name]
            diff = ma["mean"] - mb["mean"]
            spread = ma["std"] + mb["std"] if ma["std"] is not None and mb["std"] is not None else None
            differences.append({
                "a": a, "b": b, "metric": name, "diff": diff, "spread": spread,
                "larger_than_spread": abs(diff) > spread if spread is not None else None,
                "welch_p": welch_p(ma["values"], mb["values"]),
                "paper_diff": PAPER_TABLE[a][name] - PAPER_TABLE[b][name],
            })  # fmt: skip
    wall = [r["wall_time_s"] for r in records if r.get("wall_time_s")]
    # Core-hours: wall time x the threads a run used (every core for a run whose threads were not recorded).
    cores = [
        r["wall_time_s"] * (thread_count(r) or (r.get("machine") or {}).get("cpu_count") or 1)
        for r in records
        if r.get("wall_time_s")
    ]
    return {
        "rule": SPREAD_RULE,
        "seeds": sorted({r["seed"] for r in records}),
        "budget": min(budgets) if len(budgets) == 1 else None,
        "budgets_differ": sorted(budgets) if len(budgets) > 1 else None,
        "commits": sorted({r["commit"] for r in records if r.get("commit")}),
        "dirty": any(r.get("dirty") for r in records),
        "machine": records[0].get("machine") if records else None,
        "total_wall_time_h": sum(wall) / 3600 if wall else None,
        "total_core_hours": sum(cores) / 3600 if cores else None,
        "experiments": experiments,
        "differences": differences,
        "paper": PAPER_TABLE,
        "paper_conflicts": "GradVac adjusted ~2,000 of 54,000 gradient pairs (3.7%) in epoch 1, under 0.5% later",
    }


def cell(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f}"


def format_table(table: dict) -> str:
    lines = ["# The paper's Table 1 (dev), reproduced", ""]
    lines.append(
        f"Seeds {', '.join(map(str, table['seeds']))}. Each cell: mean ± sample standard deviation over seeds, and "
        "the paper's number in brackets (bert-base, 10 epochs, 141k Quora pairs). Dev metrics of each run's best "
        "epoch by `eval_overall`."
    )
    if table["budget"] is not None:
        lines += ["", f"Shared flags of every run: `{table['budget']}`."]
    else:
        budgets = "; ".join(f"`{budget}`" for budget in table["budgets_differ"])
        lines += ["", f"**Warning: the runs do not share one budget:** {budgets}"]
    lines += [
        "",
        "| experiment | seeds | " + " | ".join(METRIC_TITLES.values()) + " | steps |",
        "|---|---|" + "---|" * len(METRICS) + "---|",
    ]
    for preset, experiment in table["experiments"].items():
        metrics = [f"{cell(m['mean'], m['std'])} ({m['paper']:.3f})" for m in experiment["metrics"].values()]
        steps = ", ".join(map(str, experiment["steps"]))
        lines.append(f"| {preset} | {len(experiment['seeds'])} | {' | '.join(metrics)} | {steps} |")

    lines += ["", "## Time", ""]
    lines.append(
        "Minutes, mean ± standard deviation over seeds. Per epoch and per run: the Trainer's `train_runtime` per step "
        "(the training loop with the dev evaluation and checkpoint after every epoch) times the steps; the dev "
        "evaluation's share; wall: every attempt's whole process (start, data, final evaluation). Threads: each "
        "seed's `OMP_NUM_THREADS`; a one-thread run shared the two cores with another run. The paper: one GPU, "
        "bert-base."
    )
    lines += [
        "",
        "| experiment | threads | per epoch | of which dev evaluation | per run | wall per run | paper per epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for preset, experiment in table["experiments"].items():
        timings = experiment["timings"]
        cells = [
            cell(*(None if v is None else v / 60 for v in (timings[key]["mean"], timings[key]["std"])), digits=1)
            for key in ("time_per_epoch_s", "mean_eval_runtime_per_epoch_s", "run_time_s", "wall_time_s")
        ]
        paper = experiment["paper_epoch_minutes"]
        threads = ", ".join(experiment["threads"])
        lines.append(f"| {preset} | {threads} | {' | '.join(cells)} | {paper if paper else ''} |")
    if table["total_wall_time_h"] is not None:
        machine_info = table["machine"] or {}
        lines += [
            "",
            (
                f"All runs together: {table['total_wall_time_h']:.2f} hours of wall time, "
                f"{table['total_core_hours']:.2f} core-hours (wall time x threads; every core for a run whose threads "
                f"were not recorded), on a {machine_info.get('cpu_count')}-core CPU ({machine_info.get('platform')}, "
                f"torch {machine_info.get('torch')})."
            ),
        ]

    lines += ["", "## Differences against the seed spread", ""]
    if not table["differences"]:
        lines.append("No comparison: they need `naive` (every experiment against it) or `cosine` and `combined`.")
    else:
        lines.append(
            f"A difference counts as larger than the seed spread when {table['rule']}: **bold**, with the spread "
            "after `vs`. Welch's t-test p in brackets, for reference only (few seeds). The paper's difference beside."
        )
        lines += ["", "| comparison | " + " | ".join(METRIC_TITLES.values()) + " |", "|---|" + "---|" * len(METRICS)]
        by_pair, larger = {}, []
        for item in table["differences"]:
            by_pair.setdefault((item["a"], item["b"]), []).append(item)
        for (a, b), items in by_pair.items():
            cells = []
            for item in items:
                text = f"{item['diff']:+.3f}"
                if item["spread"] is not None:
                    text += f" vs {item['spread']:.3f}"
                if item["larger_than_spread"]:
                    text = f"**{text}**"
                    larger.append(
                        f"{a} − {b}, {METRIC_TITLES[item['metric']]}: {item['diff']:+.3f} "
                        f"(paper {item['paper_diff']:+.3f})"
                    )
                if item["welch_p"] is not None:
                    text += f" (p={item['welch_p']:.2g})"
                cells.append(f"{text}; paper {item['paper_diff']:+.3f}")
            lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
        if all(item["spread"] is None for item in table["differences"]):
            lines += ["", "Larger than the seed spread: cannot tell, it needs at least 2 seeds per experiment."]
        else:
            lines += ["", "Larger than the seed spread: " + ("; ".join(larger) if larger else "none") + "."]

    surgery = {p: e["conflicts"] for p, e in table["experiments"].items() if e["conflicts"]}
    if surgery:
        lines += ["", "## GradVac adjustments (Figure 5)", ""]
        lines.append(
            "Adjustments of g_i against g_j per epoch (mean over seeds) against the pairs compared: logged steps x "
            f"ordered task pairs. The paper: {table['paper_conflicts']} (its 54,000 is 18,000 steps x 3)."
        )
        lines += [
            "",
            "| experiment | epoch | adjusted | pairs compared | % | by pair i-j |",
            "|---|---|---|---|---|---|",
        ]
        for preset, conflicts in surgery.items():
            for item in conflicts["per_epoch"]:
                fraction = "n/a" if item["fraction"] is None else f"{100 * item['fraction']:.2f}"
                pairs = ", ".join(f"{pair} {count:.0f}" for pair, count in item["by_pair"].items())
                adjusted = cell(item["adjustments"]["mean"], item["adjustments"]["std"], 0)
                compared = f"{item['pairs_compared']:.0f}"
                lines.append(f"| {preset} | {item['epoch']} | {adjusted} | {compared} | {fraction} | {pairs} |")
    commits = ", ".join(c[:10] for c in table["commits"]) or "unknown"
    lines += ["", f"Code: commit {commits}" + (" (with uncommitted changes)" if table["dirty"] else "") + "."]
    lines += ["Regenerate: `python experiments/reproduce_paper.py --table_only`; the runs: `--dry_run`.", ""]
    return "\n".join(lines)


# ---- Figures ----


def mean_over_seeds(series: list[dict[float, float]]) -> tuple[list[float], list[float]]:
    """Points present in every seed's series, averaged."""
    common = set.intersection(*(set(s) for s in series)) if series else set()
    xs = sorted(common)
    return xs, [sum(s[x] for s in series) / len(series) for x in xs]


def by_preset(records: list[dict]) -> dict[str, list[dict]]:
    return {p: [r for r in records if r["preset"] == p] for p in PRESETS if any(r["preset"] == p for r in records)}


def plot_losses(records: list[dict], path: Path) -> Path:
    """Figure 4: training loss (sum of the task losses) per epoch, per experiment, mean over seeds; also per step."""
    groups = by_preset(records)
    several_epochs = any(len(r["loss_per_epoch"]) > 1 for r in records)
    figure, axes = plt.subplots(
        1, 2 if several_epochs else 1, figsize=(13 if several_epochs else 7, 4.5), squeeze=False
    )
    if several_epochs:
        ax = axes[0][0]
        for preset, runs in groups.items():
            epochs, means = mean_over_seeds(
                [{i["epoch"]: i["loss"] for i in r["loss_per_epoch"] if "loss" in i} for r in runs]
            )
            ax.plot(epochs, means, marker="o", label=preset)
        ax.set(title="Training loss per epoch (mean over seeds)", xlabel="epoch", ylabel="training loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    ax = axes[0][-1]
    for preset, runs in groups.items():
        steps, means = mean_over_seeds(
            [dict(zip(r["loss_per_step"]["step"], r["loss_per_step"]["loss"])) for r in runs]
        )
        ax.plot(steps, means, marker="o" if len(steps) < 30 else None, label=preset)
    ax.set(
        title="Training loss per logged step (mean over seeds)", xlabel="step", ylabel="training loss (window mean)"
    )
    return save_figure(figure, [ax], path)


def plot_conflicts(records: list[dict], path: Path) -> Path | None:
    """Figure 5: adjustments per epoch, per task pair in epoch 1, and the adjusted fraction per logged step."""
    groups = {p: [r for r in runs if r.get("surgery")] for p, runs in by_preset(records).items()}
    groups = {p: runs for p, runs in groups.items() if runs}
    if not groups:
        return None
    figure, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    width = 0.8 / len(groups)
    epochs = sorted({i["epoch"] for runs in groups.values() for r in runs for i in r["surgery"]["per_epoch"]})
    pairs = sorted(
        {pair for runs in groups.values() for r in runs for i in r["surgery"]["per_epoch"] for pair in i["by_pair"]}
    )
    for offset, (preset, runs) in enumerate(groups.items()):
        shift = -0.4 + width * (offset + 0.5)
        xs, adjusted = mean_over_seeds(
            [{i["epoch"]: i["adjustments"] for i in r["surgery"]["per_epoch"]} for r in runs]
        )
        _, compared = mean_over_seeds(
            [{i["epoch"]: i["pairs_compared"] for i in r["surgery"]["per_epoch"]} for r in runs]
        )
        bars = axes[0].bar([x + shift for x in xs], adjusted, width=width, label=preset)
        labels = [f"{100 * a / c:.1f}%" if c else "" for a, c in zip(adjusted, compared)]
        axes[0].bar_label(bars, labels=labels, fontsize=8)
        first = [
            {pair: i["by_pair"].get(pair, 0.0) for i in r["surgery"]["per_epoch"] if i["epoch"] == 1 for pair in pairs}
            for r in runs
        ]
        _, by_pair = mean_over_seeds([{pairs.index(p): v for p, v in counts.items()} for counts in first])
        axes[1].bar([k + shift for k in range(len(by_pair))], by_pair, width=width, label=preset)
        per_log = [r["surgery"]["per_log"] for r in runs]
        steps, fractions = mean_over_seeds(
            [
                {s: a / c for s, a, c in zip(log["step"], log["adjustments"], log["pairs_compared"]) if c}
                for log in per_log
            ]
        )
        axes[2].plot(steps, [100 * f for f in fractions], marker="o" if len(steps) < 30 else None, label=preset)
    axes[0].set_xticks(epochs)
    axes[0].set(
        title="Adjustments per epoch (mean over seeds; % of pairs compared)", xlabel="epoch", ylabel="adjustments"
    )
    axes[1].set_xticks(range(len(pairs)), pairs)
    axes[1].set(title="Adjustments per task pair i-j (g_i against g_j), epoch 1", xlabel="pair", ylabel="adjustments")
    axes[2].axhline(100 * 2000 / 54000, color="grey", linestyle="--", label="paper, epoch 1 (~2,000 / 54,000)")
    axes[2].set(title="Adjusted share of pairs per logged window", xlabel="step", ylabel="% of pairs compared")
    return save_figure(figure, axes, path)


def save_figure(figure, axes, path: Path) -> Path:
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_table_and_figures(records: list[dict], results_dir: Path) -> list[Path]:
    table = build_table(records)
    write_json(results_dir / "table.json", table)
    (results_dir / "table.md").write_text(format_table(table))
    written = [results_dir / "table.md", results_dir / "table.json", plot_losses(records, results_dir / "losses.png")]
    conflicts = plot_conflicts(records, results_dir / "conflicts.png")
    if conflicts is not None:
        written.append(conflicts)
    return written


# ---- Command line ----


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0],
        epilog="Other flags are appended to every run_multitask.py command (e.g. --model_name_or_path, --max_steps).",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=REPO / "outputs" / "paper",
        help="the runs' output dirs go here, one per run (default: outputs/paper)",
    )
    parser.add_argument(
        "--results_dir",
        type=Path,
        default=REPO / "results" / "paper",
        help="runs/<preset>-seed<k>.json, table.md, table.json, losses.png, conflicts.png",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="default 0 1 2; with --table_only, every seed found"
    )
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS, help="default: all six")
    parser.add_argument("--num_train_epochs", type=float, default=1.0, help="the budget of every run (default 1)")
    parser.add_argument("--dry_run", action="store_true", help="print every run's command, one a line, and stop")
    parser.add_argument("--table_only", action="store_true", help="only rebuild table and figures from the run JSONs")
    parser.add_argument(
        "--commit_results",
        action="store_true",
        help="git-commit each run's JSON as it is written (and the table and figures at the end)",
    )
    args, passthrough = parser.parse_known_args(argv)
    for item in passthrough:
        if item.split("=", 1)[0] in MANAGED_FLAGS:
            parser.error(f"{item.split('=', 1)[0]} is set by this script for every run.")
    if passthrough and not passthrough[0].startswith("--"):
        parser.error(f"unexpected argument {passthrough[0]!r}")
    args.presets = [p for p in PRESETS if p in args.presets]  # the table's order
    args.output_dir, args.results_dir = args.output_dir.resolve(), args.results_dir.resolve()
    return args, passthrough


def load_records(results_dir: Path, presets: list[str], seeds: list[int] | None) -> list[dict]:
    records = [json.loads(path.read_text()) for path in sorted((results_dir / "runs").glob("*.json"))]
    return [r for r in records if r["preset"] in presets and (seeds is None or r["seed"] in seeds)]


def main(argv: list[str] | None = None) -> dict:
    """What happened: `{"ran": [...], "gathered": [...], "skipped": [...], "failed": [...], "written": [...]}`."""
    args, passthrough = parse_args(argv)
    outcome = {"ran": [], "gathered": [], "skipped": [], "failed": [], "written": []}
    if args.dry_run:
        for run in build_runs(argparse.Namespace(**{**vars(args), "seeds": args.seeds or [0, 1, 2]}), passthrough):
            print(run.command)
        return outcome
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s - reproduce_paper - %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

    if args.table_only:
        records = load_records(args.results_dir, args.presets, args.seeds)
        if not records:
            raise FileNotFoundError(f"No run JSONs for {args.presets} in {args.results_dir / 'runs'}.")
    else:
        args.seeds = args.seeds or [0, 1, 2]
        runs = build_runs(args, passthrough)
        check_commands(runs)
        for index, run in enumerate(runs, 1):
            state = run_state(run)
            if state == "done":
                outcome["skipped"].append(run.name)
                continue
            logger.info(f"[{index}/{len(runs)}] {run.command}")
            if state in ("start", "resume"):
                if execute(run) != 0 or not is_finished(run.output_dir):
                    outcome["failed"].append(run.name)
                    continue
                outcome["ran"].append(run.name)
            else:
                logger.info(f"{run.name}: finished in {run.output_dir}; gathering its results")
                outcome["gathered"].append(run.name)
            record = gather(run)
            write_json(run.results_file, record)
            logger.info(f"{run.name}: eval_overall {record['eval_overall']:.4f}; wrote {run.results_file}")
            if args.commit_results:
                commit_results(
                    [run.results_file], f"Reproduce the paper: {run.name}, eval_overall {record['eval_overall']:.4f}"
                )
        if outcome["failed"]:
            logger.error(f"Failed: {', '.join(outcome['failed'])}; no table. Run again to resume them.")
            return outcome
        # Every run found, not only this invocation's: a run of some presets or seeds (two streams side by side,
        # a seed added later) must not replace the whole table with a part of it.
        records = load_records(args.results_dir, list(PRESETS), None)

    outcome["written"] = write_table_and_figures(records, args.results_dir)
    logger.info(f"Wrote {', '.join(path.name for path in outcome['written'])} to {args.results_dir}")
    if args.commit_results and not args.table_only:
        seeds = sorted({record["seed"] for record in records})
        commit_results(outcome["written"], f"Reproduce the paper: table and figures, seeds {seeds}")
    return outcome


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
