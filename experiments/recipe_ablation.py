# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The recipe beyond the paper, one addition at a time: from the paper's combined preset to `best`, on MiniLM.

    python -m experiments.recipe_ablation --seeds 0                    # every row once, then the table
    python -m experiments.recipe_ablation --rows best --seeds 0 1      # the final recipe with two seeds
    python -m experiments.recipe_ablation --dry_run                    # the run_multitask.py commands
    python -m experiments.recipe_ablation --table_only                 # results/recipe/table.md from the run JSONs

Each row is an ordinary `run_multitask.py` command with the budget of the paper reproduction (8 examples of each
task per round-robin step, dev evaluation after every epoch, the best epoch kept; see
`experiments/reproduce_paper.py`; both use the resumable runner of `experiments/runner.py`), plus the row's own
flags. Each row adds one thing to the row before it (or, where its description says "instead", to the row it names).
A row on a preset that has its own epochs (`trainer.presets`: `best`, two) trains those where the others train one:
`two_epochs`, then `best`, the preset itself, then the candidates that lost to it. Results go to
`results/recipe/runs/<row>-seed<k>.json`; the table also shows the frozen-feature floor
(`experiments/frozen_floor.py`), the paper's combined model and the targets. The
`combined` row is the paper reproduction's run of the same command (`results/paper/runs/combined-seed<k>.json`):
whichever script runs it first, the other reuses it.
"""

import argparse
import sys
from pathlib import Path

from trainer.presets import PRESETS
from trainer.tasks import OVERALL, PAPER_TASKS, leaderboard_of_scores

from . import runner
from .records import group_by_row, read_json, thread_count
from .tables import commands_section, metric_cells, metric_titles


CROSS_PARA = ["--preset", "combined", "--pooling", "mean", "--loss", "sts=cosent", "--pair_encoding", "para=cross"]
LR_WARMUP = [*CROSS_PARA, "--learning_rate", "1e-4", "--warmup_steps", "0.1"]
LLRD = [*LR_WARMUP, "--layerwise_lr_decay", "0.9"]
BEST = ["--preset", "best"]
TWO_EPOCHS = [*BEST, "--loss", "sts=cosent"]  # `best` before it took MSE on STS
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
    # The levers against SST's overfitting and STS's dominance, each one change from `best`.
    "best_label_smoothing": ("label smoothing 0.1 on SST and Quora", [*BEST, "--label_smoothing", "0.1"]),
    "best_rdrop_sst": ("R-Drop on SST, alpha 1", [*BEST, "--rdrop", "sst=1"]),
    "best_ema": ("the weights' moving average (decay 0.999) evaluated and kept", [*BEST, "--ema_decay", "0.999"]),
    # One task per step: the same number of examples as `best`'s 2 round-robin epochs takes 3 epochs.
    "best_annealed": (
        "annealed sampling (p ~ N^alpha, alpha 1 -> 0.2), 3 epochs: `best`'s examples",
        [*BEST, "--task_schedule", "annealed"],
    ),
    "best_sts_weight": (
        "STS loss weighted 0.25 (its gradient dominates the step)",
        [*BEST, "--task_weights", "sts=0.25"],
    ),
}
TARGETS = dict(zip(PAPER_TASKS, (0.50, 0.85, 0.87)))


# Rows that train for their own number of epochs.
ROW_EPOCHS = {"best_annealed": 3}


def row_epochs(row: str, default: float) -> float:
    """
    The epochs of a row: its own (`ROW_EPOCHS`), else those of the preset it is on where it has its own (`best`: 2),
    else the budget's.
    """
    preset = PRESETS.get(runner.flag_value(ROWS[row][1], "--preset"))
    return ROW_EPOCHS.get(row) or (preset.epochs if preset else None) or default


def build_runs(args, passthrough: list[str]) -> list[runner.Run]:
    runs = []
    for seed in args.seeds:
        for row in args.rows:
            output_dir = args.output_dir / f"{row}-seed{seed}"
            flags = ROWS[row][1]
            argv = runner.row_argv(flags, seed, output_dir, row_epochs(row, args.num_train_epochs), passthrough)
            results_file = args.results_dir / "runs" / f"{row}-seed{seed}.json"
            if row == "combined":  # the paper reproduction's run, with the same command: shared, not run twice
                output_dir = args.paper_output_dir / f"{row}-seed{seed}"
                argv[argv.index("--output_dir") + 1] = runner.command_path(output_dir)
                results_file = args.paper_results_dir / "runs" / f"{row}-seed{seed}.json"
            runs.append(runner.Run(row, seed, output_dir, argv, results_file))
    return runs


def format_table(records: list[dict], floor: dict | None) -> str:
    titles = metric_titles(PAPER_TASKS, abbreviated=True, leaderboard=True)
    lines = [f"| row | adds | {' | '.join(titles.values())} | train min (threads) | seeds |", "|---" * 9 + "|"]
    if floor is not None:
        lines.append(
            f"| frozen floor | no fine-tuning (`{floor['command']}`) | {result_cells(floor['best'])} | - | - |"
        )
    by_row = group_by_row(records, ROWS)
    for row, group in by_row.items():
        # Per seed, with its threads: a one-thread run shared the cores; only a run on every core is the budget's.
        minutes = ", ".join(f"{record['train_runtime'] / 60:.0f} ({thread_count(record) or '?'}t)" for record in group)
        seeds = ", ".join(str(record["seed"]) for record in group)
        adds = ROWS[row][0].replace("|", "\\|")  # `|u-v|` would split the cell
        lines.append(
            f"| `{row}` | {adds} | {' | '.join(metric_cells(group, leaderboard=True))} | {minutes} | {seeds} |"
        )
    paper = PRESETS["combined"].paper_results
    lines.append(f"| paper, combined | bert-base, 10 epochs, 141k Quora pairs | {result_cells(paper)} | - | - |")
    lines.append(
        "| targets | | " + " | ".join(f">= {TARGETS[key]:.2f}" for key in PAPER_TASKS) + " | | | <= 60 | 2+ |"
    )
    return (
        "\n".join(lines)
        + "\n\nTrain min: the Trainer's `train_runtime` per seed, with its threads (`1t`: one thread beside another "
        "run on the two cores; `2t`: every core, alone: the budget's condition; `?t`: not recorded). Leaderboard: the "
        "CS224N leaderboard's score, `(SST acc + Quora acc + (STS r + 1) / 2) / 3`.\n\n"
        + commands_section({row: group[0]["command"] for row, group in by_row.items()})
    )


def result_cells(results: dict[str, float]) -> str:
    """The metric cells of `{task: value, ..., OVERALL: value}` (the floor's, the paper's), then their leaderboard."""
    leaderboard = leaderboard_of_scores({task: results[task] for task in PAPER_TASKS})
    return " | ".join(f"{value:.3f}" for value in [*(results[key] for key in (*PAPER_TASKS, OVERALL)), leaderboard])


def main(argv: list[str] | None = None) -> dict:
    parser = runner.rows_parser(__doc__.strip().splitlines()[0], ROWS, "recipe")
    parser.add_argument("--paper_output_dir", type=Path, default=runner.REPO / "outputs" / "paper")
    parser.add_argument("--paper_results_dir", type=Path, default=runner.REPO / "results" / "paper")
    args, passthrough = parser.parse_known_args(argv)
    for name in ("output_dir", "results_dir", "paper_output_dir", "paper_results_dir"):
        setattr(args, name, getattr(args, name).resolve())
    outcome = runner.run_rows(args, build_runs(args, passthrough), "Recipe")
    if args.dry_run:
        return outcome
    every_run = build_runs(argparse.Namespace(**{**vars(args), "rows": list(ROWS), "seeds": range(10)}), passthrough)
    records = [read_json(run.results_file) for run in every_run if run.results_file.is_file()]
    text = format_table(records, read_json(args.results_dir / "frozen_floor.json"))
    runner.write_table(args, text, outcome, "Recipe: ablation table")
    return outcome


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
