# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""The paper's Figure 4 (training loss) and Figure 5 (GradVac adjustments), reproduced from the run JSONs: each
experiment's mean over seeds, saved as `plot_multitask` saves its figures."""

from pathlib import Path

import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import plot_multitask  # noqa: E402
from trainer.presets import PAPER_PRESETS  # noqa: E402

from .records import group_by_row  # noqa: E402


def mean_over_seeds(series: list[dict[float, float]]) -> tuple[list[float], list[float]]:
    """Points present in every seed's series, averaged."""
    common = set.intersection(*(set(s) for s in series)) if series else set()
    xs = sorted(common)
    return xs, [sum(s[x] for s in series) / len(series) for x in xs]


def plot_losses(records: list[dict], path: Path) -> Path:
    """Figure 4: training loss (sum of the task losses) per epoch, per experiment, mean over seeds; also per step."""
    groups = group_by_row(records, PAPER_PRESETS)
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
    return plot_multitask.finish(figure, [ax], path)


def plot_conflicts(records: list[dict], path: Path) -> Path | None:
    """Figure 5: adjustments per epoch, per task pair in epoch 1, and the adjusted fraction per logged step."""
    groups = {p: [r for r in runs if r.get("surgery")] for p, runs in group_by_row(records, PAPER_PRESETS).items()}
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
    return plot_multitask.finish(figure, axes, path)
