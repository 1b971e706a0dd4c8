#!/usr/bin/env python
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

    python experiments/methods_screen.py --seeds 0                                      # the screen: 1 epoch each
    python experiments/methods_screen.py --rows none upgrad --seeds 0 1 --num_train_epochs 2   # the second stage
    python experiments/methods_screen.py --table_only                                   # results/methods/table.md

The budget is the recipe ablation's (`experiments/recipe_ablation.py`, whose runner this script uses): 8 examples of
each task per round-robin step, dev evaluation after every epoch, the best epoch kept; `--num_train_epochs` (1 for
the screen) is part of each run's name, `<row>-e<epochs>-seed<k>`, so the screen and the 2-epoch runs never mix.
Results go to `results/methods/runs/`, the table to `results/methods/table.md`, with each row's command.
"""

import json
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
sys.path.insert(0, str(REPO))

import recipe_ablation  # noqa: E402
import reproduce_paper as runner  # noqa: E402

from trainer.surgery import SURGERIES  # noqa: E402


BEST = ["--preset", "best"]


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
    "dwa": ("Dynamic Weight Average", [*BEST, "--loss_weighting", "dwa"]),
}
TASK_KEYS = ("sst", "para", "sts", "overall")


def build_runs(args, passthrough: list[str]) -> list[runner.Run]:
    runs, epochs = [], runner.format_number(args.num_train_epochs)
    for seed in args.seeds:
        for row in args.rows:
            name = f"{row}-e{epochs}"
            output_dir = args.output_dir / f"{name}-seed{seed}"
            argv = recipe_ablation.row_argv(ROWS[row][1], seed, output_dir, args.num_train_epochs, passthrough)
            results_file = args.results_dir / "runs" / f"{name}-seed{seed}.json"
            runs.append(runner.Run(name, seed, output_dir, argv, results_file))
    return runs


def format_table(records: list[dict]) -> str:
    """Dev per task and overall (mean ± sd over seeds), minutes per epoch, per row and number of epochs."""
    by_name = {}
    for record in records:
        by_name.setdefault(record["preset"], []).append(record)
    lines = [
        "| row | change from `best` | epochs | SST acc | Quora acc | STS Pearson | overall | min / epoch | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(by_name, key=lambda n: (n.rsplit("-e", 1)[1], list(ROWS).index(n.rsplit("-e", 1)[0]))):
        row, epochs = name.rsplit("-e", 1)
        group = by_name[name]
        cells = [runner.cell(*runner.mean_std([r[runner.METRICS[key]] for r in group])) for key in TASK_KEYS]
        minutes = runner.cell(*runner.mean_std([r["time_per_epoch_s"] / 60 for r in group]), digits=1)
        seeds = ", ".join(str(r["seed"]) for r in group)
        lines.append(f"| `{row}` | {ROWS[row][0]} | {epochs} | {' | '.join(cells)} | {minutes} | {seeds} |")
    commands = [f"- `{name}`: `{by_name[name][0]['command']}`" for name in sorted(by_name)]
    return (
        "\n".join(lines)
        + "\n\nCommands (first seed; the others differ in `--seed` and `--output_dir`):\n\n"
        + ("\n".join(commands) + "\n")
    )


def main(argv: list[str] | None = None) -> dict:
    parser = recipe_ablation.rows_parser(__doc__.strip().splitlines()[0], ROWS, "methods")
    args, passthrough = parser.parse_known_args(argv)
    args.output_dir, args.results_dir = args.output_dir.resolve(), args.results_dir.resolve()
    runs = build_runs(args, passthrough)
    outcome = {"ran": [], "failed": [], "written": []}
    if args.dry_run:
        for run in runs:
            print(run.command)
        return outcome
    if not args.table_only:
        recipe_ablation.run_all(runs, outcome, "Methods" if args.commit_results else None)
    records = [json.loads(path.read_text()) for path in sorted((args.results_dir / "runs").glob("*.json"))]
    table = args.results_dir / "table.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(format_table(records))
    outcome["written"].append(table)
    if args.commit_results:
        runner.commit_results([table], "Methods: screen table")
    return outcome


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
