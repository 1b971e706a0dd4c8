# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Which multitask method helps on `best`: every gradient-surgery method, and every scaling and loss weighting alone,
each one change from the `best` preset of `run_multitask.py`, on MiniLM.

    python -m experiments.methods_screen --seeds 0                                      # the screen: 1 epoch each
    python -m experiments.methods_screen --rows none upgrad --seeds 0 1 --num_train_epochs 2   # the second stage
    python -m experiments.methods_screen --rows none imtl_g --seeds 0 1 --num_train_epochs 2 --pals  # then with PALs
    python -m experiments.methods_screen --table_only         # results/methods/table.md and task_statistics.png

The budget is the recipe ablation's (`experiments/recipe_ablation.py`; both use `experiments/runner.py`): 8 examples of
each task per round-robin step, dev evaluation after every epoch, the best epoch kept; `--num_train_epochs` (1 for
the screen) is part of each run's name, `<row>-e<epochs>-seed<k>`, so the screen and the 2-epoch runs never mix;
`--pals` runs each row with PALs on (`--use_pals true`, the paper's idea with a better optimizer), as `<row>_pals`.
Results go to `results/methods/runs/`, the table to `results/methods/table.md`, with each row's command;
`results/methods/task_statistics.png` draws each row's per-task gradient norms, Gramian weights and loss weights per
epoch (`experiments/methods_figures.py`).
"""

import sys

from trainer.surgery import SURGERIES

from . import runner
from .methods_figures import plot_task_statistics
from .records import group_by_row, load_records
from .seed_statistics import compare, mean_std
from .tables import cell, commands_section, metric_cells, metric_titles


BEST = ["--preset", "best"]
PALS_SUFFIX = "_pals"


def method_row(method: str) -> tuple[str, list[str]]:
    if method == "none":
        return "the `best` preset (plain sum)", BEST
    return f"gradient surgery `{method}`", [*BEST, "--gradient_surgery", method]


# name -> (the one change from `best`, its run_multitask.py flags).
ROWS = {
    **{method: method_row(method) for method in SURGERIES},
    "unit_norm": ("each task's gradient scaled to norm 1", [*BEST, "--gradient_scaling", "unit"]),
    "mean_norm": ("each task's gradient scaled to the mean norm", [*BEST, "--gradient_scaling", "mean"]),
    "clip_per_task": (
        "each task's gradient clipped to norm 1, their sum not clipped",
        [*BEST, "--gradient_scaling", "clip", "--max_grad_norm", "0"],
    ),
    "sts_weight": ("STS loss weighted 0.25 (its gradient dominates the step)", [*BEST, "--task_weights", "sts=0.25"]),
    "uncertainty": ("uncertainty weighting (learned log-variances)", [*BEST, "--loss_weighting", "uncertainty"]),
    # Per epoch, DWA would first change a weight in epoch 3; its periods here are the runner's 50-step log windows.
    "dwa": (
        "Dynamic Weight Average over 50-step periods",
        [*BEST, "--loss_weighting", "dwa", "--dwa_period_steps", "50"],
    ),
}


def build_runs(args, passthrough: list[str]) -> list[runner.Run]:
    runs, epochs = [], runner.format_number(args.num_train_epochs)
    for seed in args.seeds:
        for row in args.rows:
            flags = [*ROWS[row][1], "--use_pals", "true"] if args.pals else ROWS[row][1]
            name = f"{row}{PALS_SUFFIX if args.pals else ''}-e{epochs}"
            output_dir = args.output_dir / f"{name}-seed{seed}"
            argv = runner.row_argv(flags, seed, output_dir, args.num_train_epochs, passthrough)
            results_file = args.results_dir / "runs" / f"{name}-seed{seed}.json"
            runs.append(runner.Run(name, seed, output_dir, argv, results_file))
    return runs


def change_from_best(row: str) -> str:
    """A row's one change from `best`, with or without PALs."""
    method = row.removesuffix(PALS_SUFFIX)
    return ROWS[method][0] + (", with PALs" if row != method else "")


def table_order(name: str) -> tuple:
    """By epochs, then the rows without PALs before those with, then in the order of `ROWS`."""
    row, epochs = name.rsplit("-e", 1)
    return epochs, row.endswith(PALS_SUFFIX), list(ROWS).index(row.removesuffix(PALS_SUFFIX))


def format_table(records: list[dict]) -> str:
    """Dev per task and overall (mean ± sd over seeds), the overall's difference to `none` at the same epochs,
    minutes per epoch, per row and number of epochs."""
    by_name = group_by_row(records)
    titles = " | ".join(metric_titles(abbreviated=True, leaderboard=True).values())
    lines = [
        f"| row | change from `best` | epochs | {titles} | overall - `none` | min / epoch | seeds |",
        "|---" * 11 + "|",
    ]
    for name in sorted(by_name, key=table_order):
        row, epochs = name.rsplit("-e", 1)
        group = by_name[name]
        minutes = cell(*mean_std([r["time_per_epoch_s"] / 60 for r in group]), digits=1)
        seeds = ", ".join(str(r["seed"]) for r in group)
        cells = " | ".join(metric_cells(group, leaderboard=True))
        difference = difference_to_none(group, by_name.get(f"none-e{epochs}"))
        change = change_from_best(row)
        lines.append(f"| `{row}` | {change} | {epochs} | {cells} | {difference} | {minutes} | {seeds} |")
    note = "`*`: the difference is larger than the two rows' seed standard deviations added (2 seeds or more each).\n"
    # A run of the same command done earlier for another table stands in for a rerun; the record says which.
    for record in records:
        if "reused_from" in record:
            note += f"\n`{record['preset']}-seed{record['seed']}` is {record['reused_from']}.\n"
    commands = commands_section({name: by_name[name][0]["command"] for name in sorted(by_name)})
    return "\n".join(lines) + "\n\n" + note + "\n" + commands


def difference_to_none(group: list[dict], none: list[dict] | None) -> str:
    """The difference of the overall means, starred when larger than the seed spread (`seed_statistics.compare`)."""
    if not none or group is none:
        return ""
    overall = []
    for runs in (group, none):
        values = [r[runner.OVERALL_KEY] for r in runs]
        mean, std = mean_std(values)
        overall.append({"mean": mean, "std": std, "values": values})
    comparison = compare(*overall)
    return f"{comparison['diff']:+.3f}" + (" *" if comparison["larger_than_spread"] else "")


def main(argv: list[str] | None = None) -> dict:
    parser = runner.rows_parser(__doc__.strip().splitlines()[0], ROWS, "methods")
    parser.add_argument("--pals", action="store_true", help="Each row with PALs on (`--use_pals true`).")
    args, passthrough = parser.parse_known_args(argv)
    args.output_dir, args.results_dir = args.output_dir.resolve(), args.results_dir.resolve()
    outcome = runner.run_rows(args, build_runs(args, passthrough), "Methods")
    if args.dry_run:
        return outcome
    records = load_records(args.results_dir)
    runner.write_table(args, format_table(records), outcome, "Methods: screen table")
    figure = plot_task_statistics(records, args.results_dir / "task_statistics.png")
    if figure is not None:
        outcome["written"].append(figure)
        if args.commit_results:
            runner.commit_results([figure], "Methods: per-task gradient norms and weights")
    return outcome


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
