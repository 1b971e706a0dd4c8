# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""What each method of the methods screen did, from the run JSONs: per row and epoch, each task's gradient norm, the
weight a Gramian weighting gave it and its loss weight (mean over seeds), saved as `plot_multitask` saves figures."""

from pathlib import Path

import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import plot_multitask  # noqa: E402
from trainer.tasks import PAPER_TASKS  # noqa: E402

from .records import TASK_STATISTICS, group_by_row  # noqa: E402


TITLES = {
    "grad_norm": "Gradient norm of each task (shared parameters, before any scaling)",
    "weight": "Weight a Gramian weighting gave each task",
    "loss_weight": "Loss weight of each task",
}


def mean_statistics(runs: list[dict], statistic: str) -> dict[tuple[int, str], float]:
    """`{(epoch, task): mean over the seeds that logged it}` of one row's runs."""
    values = {}
    for run in runs:
        for task, by_epoch in run.get("task_statistics_per_epoch", {}).get(statistic, {}).items():
            for epoch, value in by_epoch.items():
                values.setdefault((int(epoch), task), []).append(value)
    return {key: sum(xs) / len(xs) for key, xs in sorted(values.items())}


def plot_task_statistics(records: list[dict], path: Path) -> Path | None:
    """One panel per logged statistic (`TASK_STATISTICS`), a group of bars (one per task) per row and epoch; None
    when no run logged any."""
    groups = group_by_row(records)
    panels = {}
    for statistic in TASK_STATISTICS:
        by_row = {row: mean_statistics(runs, statistic) for row, runs in groups.items()}
        by_row = {row: values for row, values in by_row.items() if values}
        if by_row:
            panels[statistic] = by_row
    if not panels:
        return None
    figure, axes = plt.subplots(len(panels), 1, figsize=(14, 4.2 * len(panels)), squeeze=False)
    for ax, (statistic, by_row) in zip(axes[:, 0], panels.items()):
        groups_x = [(row, epoch) for row, values in by_row.items() for epoch in sorted({e for e, _ in values})]
        logged = {task for values in by_row.values() for _, task in values}
        tasks = [task for task in PAPER_TASKS if task in logged] + sorted(logged - set(PAPER_TASKS))
        width = 0.8 / len(tasks)
        for k, task in enumerate(tasks):
            heights = [by_row[row].get((epoch, task), 0.0) for row, epoch in groups_x]
            ax.bar([x - 0.4 + width * (k + 0.5) for x in range(len(groups_x))], heights, width=width, label=task)
        ax.set_xticks(range(len(groups_x)), [f"{row}\nepoch {epoch}" for row, epoch in groups_x], fontsize=8)
        ax.set(title=f"{TITLES[statistic]} (mean over seeds and log windows)", ylabel=statistic)
    return plot_multitask.finish(figure, list(axes[:, 0]), path)
