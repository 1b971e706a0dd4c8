# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
What a run's results JSON (`<results_dir>/runs/<row>-seed<k>.json`) holds, and how the tables read them.

A record: the command, the code's commit (and whether tracked files outside `results/` had changes), steps, the dev
metrics after every epoch (from `trainer_state.json`), the final dev metrics (the best epoch's, reloaded), the
training loss per logged step and per epoch (mean of the logged values; a log window is counted in the epoch it ends
in), each task's logged statistics per epoch (`task_statistics_per_epoch`: a Gramian weighting's weight, the
gradient norm, the loss weight; the JSON keys the epochs as strings), and for gradient-surgery runs the adjustments
per ordered task pair per epoch (`surgery/<i>-<j>/adjustments` summed by `plot_multitask.per_epoch`) against the
pairs compared: the logged steps times the ordered pairs (6 for 3 tasks; with `--surgery_granularity layer` or
`tensor` the adjustments are summed over parameter groups, the pairs counted once a step). Its row (a preset, or an
ablation's row) is under the key `"preset"` in every record.

Timing: `train_runtime` is the Trainer's own measure, summed over the attempts that finished training; it covers the
training loop including the dev evaluation and checkpoint after each epoch, not loading and tokenising.
`time_per_epoch_s` is that per step times the steps of an epoch (so a resumed run is not counted twice);
`eval_runtime_per_epoch_s` is the dev evaluation's share; `wall_time_s` sums every attempt's whole process.
"""

import json
import os
import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import plot_multitask


def read_json(path: Path, default=None):
    return json.loads(path.read_text()) if path.is_file() else default


def load_records(results_dir: Path) -> list[dict]:
    """Every run JSON in `<results_dir>/runs`, by file name."""
    return [json.loads(path.read_text()) for path in sorted((results_dir / "runs").glob("*.json"))]


def row_of(record: dict) -> str:
    return record["preset"]


def group_by_row(records: list[dict], rows=None) -> dict[str, list[dict]]:
    """`{row: [its records]}`, in the order of `rows` (those with records), else in the records' order."""
    groups = {}
    for record in records:
        groups.setdefault(row_of(record), []).append(record)
    return groups if rows is None else {row: groups[row] for row in rows if row in groups}


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

    # Each task's dev loss per epoch, beside its training loss: the train-dev gap.
    dev_loss = {}
    for key, by_epoch in plot_multitask.per_epoch(history, r"^eval_\w+_loss$", reduce="mean").items():
        for epoch, value in by_epoch.items():
            dev_loss.setdefault(epoch, {})[key] = value

    return {
        "dev_per_epoch": [{"epoch": epoch, **values} for epoch, values in sorted(dev.items())],
        "task_statistics_per_epoch": task_statistics(history),
        "dev_loss_per_epoch": [{"epoch": epoch, **values} for epoch, values in sorted(dev_loss.items())],
        "eval_runtime_per_epoch_s": [{"epoch": e, "seconds": round(s, 2)} for e, s in sorted(eval_runtime.items())],
        "loss_per_epoch": [{"epoch": epoch, **values} for epoch, values in sorted(loss_per_epoch.items())],
        "loss_per_step": loss_per_step,
        "surgery": summarize_surgery(history, train_logs, resume_steps),
    }


# What a run logged per task: a Gramian weighting's weights, the gradient norms, the loss weights.
TASK_STATISTICS = {
    "weight": plot_multitask.WEIGHTS,
    "grad_norm": plot_multitask.GRAD_NORMS,
    "loss_weight": plot_multitask.LOSS_WEIGHTS,
}


def task_statistics(history: list[dict]) -> dict[str, dict[str, dict[int, float]]]:
    """Per statistic the run logged (`TASK_STATISTICS`): per task, its mean over the log windows of each epoch."""
    statistics = {
        name: plot_multitask.per_epoch(history, pattern, reduce="mean") for name, pattern in TASK_STATISTICS.items()
    }
    return {name: by_task for name, by_task in statistics.items() if by_task}


def summarize_surgery(history: list[dict], train_logs: list[dict], resume_steps: list[int]) -> dict | None:
    """The adjustments per epoch and per logged window against the pairs compared; None for a run without surgery."""
    adjustments = plot_multitask.per_epoch(history, plot_multitask.ADJUSTMENTS, reduce="sum")
    if not adjustments:
        return None
    surgery_logs = [e for e in train_logs if any(plot_multitask.ADJUSTMENTS.match(key) for key in e)]
    pairs = sorted(adjustments)
    windows = log_windows(train_logs, resume_steps)
    window_of = {id(entry): steps for entry, steps in zip(train_logs, windows)}
    per_log = {"step": [], "steps": [], "adjustments": [], "pairs_compared": []}
    steps_by_epoch = {}
    for entry in surgery_logs:
        steps, epoch = window_of[id(entry)], plot_multitask.epoch_of(entry)
        steps_by_epoch[epoch] = steps_by_epoch.get(epoch, 0) + steps
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
    return {
        "ordered_pairs": len(pairs),
        "per_epoch": per_epoch,
        "adjustments_total": total_adjusted,
        "pairs_compared_total": total_compared,
        "fraction_total": total_adjusted / total_compared if total_compared else None,
        "per_log": per_log,
    }
