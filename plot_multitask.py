#!/usr/bin/env python
# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Plots a run from its `trainer_state.json`: per-task dev metrics and training losses per epoch; for a run with gradient
surgery, the adjustments per epoch per task pair (the paper's Figure 5) and each task's gradient norm; the weights a
Gramian weighting gave each task, and the task loss weights, per epoch.

    python plot_multitask.py outputs/combined            # writes outputs/combined/plots/*.png
    python plot_multitask.py outputs/combined/checkpoint-1772/trainer_state.json --output_dir plots
"""

import argparse
import json
import math
import re
from collections import defaultdict
from pathlib import Path

import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


# Each series is named by the group `name` (the task pair or the task), else by its key.
ADJUSTMENTS = re.compile(r"^surgery/(?P<name>.+)/adjustments$")
# Per task: a Gramian weighting's weight, the gradient norm, the loss weight.
WEIGHTS = re.compile(r"^surgery/(?P<name>[^/-]+)/weight$")
GRAD_NORMS = re.compile(r"^surgery/(?P<name>[^/-]+)/grad_norm$")
LOSS_WEIGHTS = re.compile(r"^loss_weight/(?P<name>.+)$")


def load_log_history(path: Path) -> list[dict]:
    state_file = path / "trainer_state.json" if path.is_dir() else path
    if not state_file.is_file():
        raise FileNotFoundError(f"No trainer_state.json at {state_file}.")
    return json.loads(state_file.read_text())["log_history"]


def dev_metrics(history: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """`{eval_sst_accuracy: [(epoch, value), ...], ...}`: the task metrics and the overall mean."""
    series = defaultdict(list)
    for entry in history:
        for key, value in entry.items():
            if key == "eval_overall" or re.fullmatch(r"eval_\w+_(accuracy|pearson)", key):
                series[key].append((entry["epoch"], value))
    return dict(series)


def epoch_of(entry: dict) -> int:
    """The epoch a log entry belongs to: epoch 1 covers (0, 1], epoch 2 (1, 2], ..."""
    return max(1, math.ceil(entry["epoch"]))


def per_epoch(history: list[dict], pattern: re.Pattern | str, reduce: str) -> dict[str, dict[int, float]]:
    """Training-log values matching `pattern`, gathered per epoch (`epoch_of`) by "mean" or "sum"."""
    pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
    values = defaultdict(lambda: defaultdict(list))
    for entry in history:
        if "epoch" not in entry:
            continue
        epoch = epoch_of(entry)
        for key, value in entry.items():
            match = pattern.match(key)
            if match:
                name = match.groupdict().get("name", key)
                values[name][epoch].append(value)
    combine = (lambda xs: sum(xs) / len(xs)) if reduce == "mean" else sum
    return {name: {epoch: combine(xs) for epoch, xs in sorted(by_epoch.items())} for name, by_epoch in values.items()}


def logged(history: list[dict], pattern: str) -> dict[str, list[tuple[float, float]]]:
    """Training-log values matching `pattern`, as (epoch, value) points."""
    series = defaultdict(list)
    for entry in history:
        for key, value in entry.items():
            if "epoch" in entry and re.match(pattern, key):
                series[key].append((entry["epoch"], value))
    return dict(series)


def save(figure, axes, title: str, ylabel: str, path: Path):
    axes.set(title=title, xlabel="epoch", ylabel=ylabel)
    finish(figure, [axes], path)


def finish(figure, axes: list, path: Path) -> Path:
    """Grid and legend on each of `axes`, then the figure to `path` (PNG, 120 dpi), closed."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_lines(series: dict[str, list[tuple[float, float]]], title: str, ylabel: str, path: Path):
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, points in sorted(series.items()):
        axes.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=name)
    save(figure, axes, title, ylabel, path)


def plot_bars(per_epoch_values: dict[str, dict[int, float]], title: str, ylabel: str, path: Path):
    """Grouped bars: one group per epoch, one bar per series."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    names = sorted(per_epoch_values)
    width = 0.8 / len(names)
    for offset, name in enumerate(names):
        epochs, values = zip(*per_epoch_values[name].items())
        axes.bar([e - 0.4 + width * (offset + 0.5) for e in epochs], values, width=width, label=name)
    axes.set_xticks(sorted({e for values in per_epoch_values.values() for e in values}))
    save(figure, axes, title, ylabel, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("run", type=Path, help="a run's output dir, a checkpoint dir or a trainer_state.json")
    parser.add_argument("--output_dir", type=Path, default=None, help="default: <run>/plots")
    args = parser.parse_args(argv)
    history = load_log_history(args.run)
    output_dir = args.output_dir or (args.run if args.run.is_dir() else args.run.parent) / "plots"
    output_dir.mkdir(parents=True, exist_ok=True)

    written = []
    metrics = dev_metrics(history)
    if metrics:
        plot_lines(metrics, "Dev metrics", "accuracy / Pearson", output_dir / "dev_metrics.png")
        written.append("dev_metrics.png")
    losses = logged(history, r"^loss_\w+$")
    if losses:
        plot_lines(losses, "Training loss per task", "loss (mean since the previous log)", output_dir / "losses.png")
        written.append("losses.png")
    adjustments = per_epoch(history, ADJUSTMENTS, reduce="sum")
    if adjustments:
        plot_bars(
            adjustments,
            "Gradient surgery: adjustments of g_i against g_j (pair i-j)",
            "adjustments per epoch",
            output_dir / "conflicts.png",
        )
        written.append("conflicts.png")
    for pattern, title, ylabel, name in (
        (WEIGHTS, "Gramian weighting: the weight of each task", "mean weight per epoch", "weights.png"),
        (GRAD_NORMS, "Gradient norm of each task (shared parameters)", "mean norm per epoch", "grad_norms.png"),
        (LOSS_WEIGHTS, "Task loss weights", "mean weight per epoch", "loss_weights.png"),
    ):
        values = per_epoch(history, pattern, reduce="mean")
        if values:
            plot_bars(values, title, ylabel, output_dir / name)
            written.append(name)
    if not written:
        raise ValueError(f"{args.run}: the log history has no dev metrics, task losses or surgery statistics.")
    print(f"Wrote {', '.join(written)} to {output_dir}")
    return [output_dir / name for name in written]


if __name__ == "__main__":
    main()
