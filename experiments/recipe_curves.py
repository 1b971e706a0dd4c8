# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Learning curves of recipe rows, one task at a time: the dev metric per epoch of each row, and the train-dev gap (the
training loss of each epoch against the dev loss after it).

    python -m experiments.recipe_curves                       # the first paper task, `best` and its regularisers
    python -m experiments.recipe_curves --task para --rows best best_annealed

Reads the committed run JSONs (`results/recipe/runs/<row>-seed<k>.json`; a row's seeds are averaged) and writes
`results/recipe/curves-<task>.png`. Runs recorded before the dev loss was (`dev_loss_per_epoch`) draw no gap.
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import plot_multitask
from plot_multitask import plt  # matplotlib without a display (Agg), as plot_multitask sets it up
from trainer.tasks import PAPER_TASKS, get_task, metric_key

from . import runner
from .records import group_by_row, load_records
from .tables import metric_titles


DEFAULT_ROWS = ("best", "best_label_smoothing", "best_rdrop_sst", "best_ema")


def mean_per_epoch(records: list[dict], section: str, key: str) -> dict[float, float]:
    """`{epoch: mean over the records}` of `key` in each record's per-epoch `section`."""
    values = defaultdict(list)
    for record in records:
        for entry in record.get(section, []):
            if key in entry:
                values[entry["epoch"]].append(entry[key])
    return {epoch: sum(v) / len(v) for epoch, v in sorted(values.items())}


def draw(records: list[dict], task: str, rows: list[str], path) -> None:
    by_row = group_by_row(records)
    figure, (metric_axes, gap_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for row in [row for row in rows if row in by_row]:
        group = by_row[row]
        dev = mean_per_epoch(group, "dev_per_epoch", metric_key(task))
        line = metric_axes.plot(list(dev), list(dev.values()), marker="o", label=f"{row} ({len(group)} seeds)")[0]
        train = mean_per_epoch(group, "loss_per_epoch", f"loss_{task}")
        dev_loss = mean_per_epoch(group, "dev_loss_per_epoch", f"eval_{task}_loss")
        if dev_loss:
            gap_axes.plot(list(train), list(train.values()), marker="o", color=line.get_color(), label=f"{row} train")
            gap_axes.plot(
                list(dev_loss), list(dev_loss.values()), marker="s", linestyle="--", color=line.get_color(),
                label=f"{row} dev",
            )  # fmt: skip
    metric_axes.set(title=f"{get_task(task).short_name}: dev per epoch", xlabel="epoch")
    metric_axes.set_ylabel(metric_titles([task])[task])
    gap_axes.set(title=f"{get_task(task).short_name}: training loss of the epoch, dev loss after it", xlabel="epoch")
    gap_axes.set_ylabel("loss")
    plot_multitask.finish(figure, [metric_axes, gap_axes], path)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--task", default=PAPER_TASKS[0], choices=PAPER_TASKS)
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    parser.add_argument("--results_dir", type=Path, default=runner.REPO / "results" / "recipe")
    args = parser.parse_args(argv)
    path = args.results_dir / f"curves-{args.task}.png"
    draw(load_records(args.results_dir), args.task, args.rows, path)
    print(path)
    return path


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
