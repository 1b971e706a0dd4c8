#!/usr/bin/env python
# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The recipe beyond the paper, one addition at a time: from the paper's combined preset to `best`, on MiniLM.

    python experiments/recipe_ablation.py --seeds 0                    # every row once, then the table
    python experiments/recipe_ablation.py --rows best --seeds 0 1      # the final recipe with two seeds
    python experiments/recipe_ablation.py --dry_run                    # the run_multitask.py commands
    python experiments/recipe_ablation.py --table_only                 # results/recipe/table.md from the run JSONs

Each row is an ordinary `run_multitask.py` command with the budget of the paper reproduction (8 examples of each
task per round-robin step, dev evaluation after every epoch, the best epoch kept; see
`experiments/reproduce_paper.py`, whose resumable runner this script uses), plus the row's own flags. Each row adds
one thing to the row before it (or, where its description says "instead", to the row it names). The rows on the
`best` preset of `run_multitask.py` train its two epochs where the others train one: `two_epochs`, then `best`, the
preset itself, then the candidates that lost to it. Results go to `results/recipe/runs/<row>-seed<k>.json`; the table
also shows the frozen-feature floor (`experiments/frozen_floor.py`), the paper's combined model and the targets. The
`combined` row is the paper reproduction's run of the same command (`results/paper/runs/combined-seed<k>.json`):
whichever script runs it first, the other reuses it.
"""

import argparse
import json
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

import reproduce_paper as runner  # noqa: E402


CROSS_PARA = ["--preset", "combined", "--pooling", "mean", "--loss", "sts=cosent", "--pair_encoding", "para=cross"]
LR_WARMUP = [*CROSS_PARA, "--learning_rate", "1e-4", "--warmup_steps", "0.1"]
LLRD = [*LR_WARMUP, "--layerwise_lr_decay", "0.9"]
TWO_EPOCHS = ["--preset", "best", "--loss", "sts=cosent"]  # `best` before it took MSE on STS
# name -> (what the row adds to the one before, its run_multitask.py flags). Defaults are the paper's.
ROWS = {
    "combined": ("the paper's combined preset: PALs, GradVac, cosine STS head", ["--preset", "combined"]),
    "mean_pooling": ("mean pooling (all-MiniLM-L6-v2's own)", ["--preset", "combined", "--pooling", "mean"]),
    "cosent": (
        "CoSENT loss on the STS cosine",
        ["--preset", "combined", "--pooling", "mean", "--loss", "sts=cosent"],
    ),
    "cross_para": ("Quora pairs cross-encoded", CROSS_PARA),
    # Instead of cross-encoding Quora (from `cosent`): a better bi-encoder head, then a ranking loss on it.
    "sbert_para": (
        "instead of cross-encoding (from `cosent`): Quora head on [u, v, |u-v|, u*v]",
        ["--preset", "combined", "--pooling", "mean", "--loss", "sts=cosent", "--pair_features", "para=sbert"],
    ),
    "ranking_para": (
        "multiple-negatives ranking loss on Quora's duplicate pairs",
        [
            "--preset",
            "combined",
            "--pooling",
            "mean",
            "--loss",
            "sts=cosent",
            "para=cross_entropy+ranking",
            "--pair_features",
            "para=sbert",
        ],
    ),
    # Back on the main line (from `cross_para`): the schedule, then what buys a second epoch within 60 minutes.
    "lr_warmup": ("learning rate 1e-4 (from 5e-5) with 10% warm-up", LR_WARMUP),
    "llrd": ("layer-wise learning-rate decay 0.9", LLRD),
    "no_pals_gradvac": (
        "no PALs, no GradVac (faster steps)",
        [*LLRD, "--use_pals", "false", "--gradient_surgery", "none"],
    ),
    # A second epoch, then the one change that made it `best`: rows on the `best` preset train its two epochs.
    "two_epochs": ("a second epoch", TWO_EPOCHS),
    "best": ("MSE on the STS cosine (the paper's) instead of CoSENT: the `best` preset", ["--preset", "best"]),
    # Candidates that lost, each one change from `two_epochs`.
    "best_sbert_para": (
        "instead (from `two_epochs`): Quora bi-encoded, head on [u, v, |u-v|, u*v], not cross-encoded",
        [*TWO_EPOCHS, "--pair_encoding", "para=separate", "--pair_features", "para=sbert"],
    ),
    # At one epoch `llrd` was .004 below `lr_warmup` (one seed each): is a second epoch better without it?
    "best_no_llrd": (
        "instead (from `two_epochs`): no layer-wise learning-rate decay",
        [*TWO_EPOCHS, "--layerwise_lr_decay", "1.0"],
    ),
}
# Rows trained longer than `--num_train_epochs` (the reproduction's one epoch): those on the `best` preset, its 2.
ROW_EPOCHS = {row: 2 for row, (_, flags) in ROWS.items() if flags[:2] == ["--preset", "best"]}
TARGETS = {"sst": 0.50, "para": 0.85, "sts": 0.87}
PAPER_COMBINED = {"sst": 0.499, "para": 0.787, "sts": 0.727, "overall": 0.671}


def row_argv(flags: list[str], seed: int, output_dir: Path, epochs: float, passthrough: list[str]) -> list[str]:
    """A row's `run_multitask.py` command: its flags, then the seed, the output dir and the shared budget."""
    return [
        "python", "run_multitask.py", *flags,
        "--seed", str(seed),
        "--output_dir", runner.command_path(output_dir),
        *runner.shared_flags(epochs),
        *passthrough,
    ]  # fmt: skip


def build_runs(args, passthrough: list[str]) -> list[runner.Run]:
    runs = []
    for seed in args.seeds:
        for row in args.rows:
            output_dir = args.output_dir / f"{row}-seed{seed}"
            epochs = ROW_EPOCHS.get(row, args.num_train_epochs)
            argv = row_argv(ROWS[row][1], seed, output_dir, epochs, passthrough)
            results_file = args.results_dir / "runs" / f"{row}-seed{seed}.json"
            if row == "combined":  # the paper reproduction's run, with the same command: shared, not run twice
                output_dir = args.paper_output_dir / f"{row}-seed{seed}"
                argv[argv.index("--output_dir") + 1] = runner.command_path(output_dir)
                results_file = args.paper_results_dir / "runs" / f"{row}-seed{seed}.json"
            runs.append(runner.Run(row, seed, output_dir, argv, results_file))
    return runs


def format_table(records: list[dict], floor: dict | None) -> str:
    keys = ("sst", "para", "sts", "overall")
    lines = [
        "| row | adds | SST acc | Quora acc | STS Pearson | overall | train min (threads) | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if floor is not None:
        best = floor["best"]
        cells = " | ".join(f"{best[key]:.3f}" for key in keys)
        lines.append(f"| frozen floor | no fine-tuning (`{floor['command']}`) | {cells} | - | - |")
    by_row = {}
    for record in records:
        by_row.setdefault(record["preset"], []).append(record)
    for row in [row for row in ROWS if row in by_row]:
        group = by_row[row]
        cells = []
        for key in keys:
            mean, std = runner.mean_std([record[runner.METRICS[key]] for record in group])
            cells.append(runner.cell(mean, std))
        # Per seed, with its threads: a one-thread run shared the cores; only a run on every core is the budget's.
        minutes = ", ".join(
            f"{record['train_runtime'] / 60:.0f} ({runner.thread_count(record) or '?'}t)" for record in group
        )
        seeds = ", ".join(str(record["seed"]) for record in group)
        adds = ROWS[row][0].replace("|", "\\|")  # `|u-v|` would split the cell
        lines.append(f"| `{row}` | {adds} | {' | '.join(cells)} | {minutes} | {seeds} |")
    lines.append(
        "| paper, combined | bert-base, 10 epochs, 141k Quora pairs | "
        + " | ".join(f"{PAPER_COMBINED[key]:.3f}" for key in keys)
        + " | - | - |"
    )
    lines.append("| targets | | " + " | ".join(f">= {TARGETS[key]:.2f}" for key in keys[:3]) + " | | <= 60 | 2+ |")
    commands = [f"- `{row}`: `{by_row[row][0]['command']}`" for row in ROWS if row in by_row]
    return (
        "\n".join(lines)
        + "\n\nTrain min: the Trainer's `train_runtime` per seed, with its threads (`1t`: one thread beside another "
        "run on the two cores; `2t`: every core, alone: the budget's condition; `?t`: not recorded).\n\n"
        "Commands (first seed; the others differ in `--seed` and `--output_dir`):\n\n" + ("\n".join(commands) + "\n")
    )


def run_all(runs: list[runner.Run], outcome: dict, commit_label: str | None = None) -> None:
    """
    Runs (or resumes) every run not done yet and writes its results JSON, committing it at once under
    `commit_label` when given; the names go to `outcome["ran"]` or `outcome["failed"]`.
    """
    runner.logger.addHandler(runner.logging.StreamHandler(sys.stderr))
    runner.logger.setLevel(runner.logging.INFO)
    runner.check_commands(runs)
    for run in runs:
        state = runner.run_state(run)
        if state == "done":
            continue
        if state in ("start", "resume") and (runner.execute(run) != 0 or not runner.is_finished(run.output_dir)):
            outcome["failed"].append(run.name)
            continue
        record = runner.gather(run)
        runner.write_json(run.results_file, record)
        outcome["ran"].append(run.name)
        runner.logger.info(f"{run.name}: eval_overall {record['eval_overall']:.4f}; wrote {run.results_file}")
        if commit_label is not None:
            runner.commit_results(
                [run.results_file], f"{commit_label}: {run.name}, eval_overall {record['eval_overall']:.4f}"
            )


def rows_parser(description: str, rows: dict, name: str) -> argparse.ArgumentParser:
    """The arguments of a script of rows: outputs/<name> and results/<name>, seeds, rows, the budget, what to do."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument("--output_dir", type=Path, default=REPO / "outputs" / name)
    parser.add_argument("--results_dir", type=Path, default=REPO / "results" / name)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", default=list(rows), choices=list(rows))
    parser.add_argument("--num_train_epochs", type=float, default=1.0)
    parser.add_argument("--dry_run", action="store_true")
    parser.add_argument("--table_only", action="store_true")
    parser.add_argument("--commit_results", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = rows_parser(__doc__.strip().splitlines()[0], ROWS, "recipe")
    parser.add_argument("--paper_output_dir", type=Path, default=REPO / "outputs" / "paper")
    parser.add_argument("--paper_results_dir", type=Path, default=REPO / "results" / "paper")
    args, passthrough = parser.parse_known_args(argv)
    for name in ("output_dir", "results_dir", "paper_output_dir", "paper_results_dir"):
        setattr(args, name, getattr(args, name).resolve())
    runs = build_runs(args, passthrough)
    outcome = {"ran": [], "failed": [], "written": []}
    if args.dry_run:
        for run in runs:
            print(run.command)
        return outcome
    if not args.table_only:
        run_all(runs, outcome, "Recipe" if args.commit_results else None)
    every_run = build_runs(argparse.Namespace(**{**vars(args), "rows": list(ROWS), "seeds": range(10)}), passthrough)
    records = [json.loads(run.results_file.read_text()) for run in every_run if run.results_file.is_file()]
    floor_path = args.results_dir / "frozen_floor.json"
    floor = json.loads(floor_path.read_text()) if floor_path.is_file() else None
    table = args.results_dir / "table.md"
    table.write_text(format_table(records, floor))
    outcome["written"].append(table)
    if args.commit_results:
        runner.commit_results([table], "Recipe: ablation table")
    return outcome


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
