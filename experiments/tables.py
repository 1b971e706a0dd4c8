# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""The pieces of the experiments' Markdown tables: cells, the metric columns (named from the task registry), and
the list of each row's command."""

from trainer.metrics import METRIC_TITLES
from trainer.tasks import LEADERBOARD, OVERALL, PAPER_TASKS, get_task, leaderboard_of, metric_keys

from .seed_statistics import mean_std


def cell(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def metric_titles(tasks=PAPER_TASKS, abbreviated: bool = False, leaderboard: bool = False) -> dict[str, str]:
    """
    `{task: "SST accuracy", ..., OVERALL: "overall"}` (`"SST acc"` abbreviated), then `LEADERBOARD: "leaderboard"`
    with `leaderboard`: the metric columns' titles.
    """
    titles = {}
    for task in tasks:
        full, short = METRIC_TITLES[get_task(task).metric]
        titles[task] = f"{get_task(task).short_name} {short if abbreviated else full}"
    return {**titles, OVERALL: OVERALL, **({LEADERBOARD: LEADERBOARD} if leaderboard else {})}


def metric_cells(records: list[dict], tasks=PAPER_TASKS, leaderboard: bool = False) -> list[str]:
    """
    Each metric column's cell for the runs of one row: mean ± standard deviation over its seeds; with `leaderboard`,
    then the leaderboard score (from the task metrics: runs recorded before it was logged have it too).
    """
    cells = [cell(*mean_std([record[key] for record in records])) for key in metric_keys(tasks).values()]
    if leaderboard:
        cells.append(cell(*mean_std([leaderboard_of(record, tasks) for record in records])))
    return cells


def commands_section(commands: dict[str, str]) -> str:
    """The list of `{row: command}` under its heading, as the tables end."""
    lines = [f"- `{row}`: `{command}`" for row, command in commands.items()]
    return "Commands (first seed; the others differ in `--seed` and `--output_dir`):\n\n" + "\n".join(lines) + "\n"
