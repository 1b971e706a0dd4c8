# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Reproduces the paper's Table 1 (dev), Figure 4 (training loss) and Figure 5 (GradVac adjustments): the paper's
presets (`trainer.presets.PAPER_PRESETS`: `baseline`, `naive`, `gradvac`, `pals`, `cosine`, `combined`), once per
seed, each through `run_multitask.py`.

    python -m experiments.reproduce_paper --seeds 0 1 2                 # train what is missing, then table and figures
    python -m experiments.reproduce_paper --seeds 0 1 --dry_run         # the 12 run_multitask.py commands, one a line
    python -m experiments.reproduce_paper --table_only                  # table and figures from results/paper/runs

Each run is an ordinary command, run from the repository root (the seeds outermost, so that an interrupted
reproduction has whole seeds first):

    python run_multitask.py --preset naive --seed 0 --output_dir outputs/paper/naive-seed0 --do_train --do_eval ...

Flags this script does not know are appended to every run's command, after the shared ones (so they win): e.g.
`--model_name_or_path`, `--max_train_samples`, `--max_eval_samples`, `--max_steps`, `--logging_steps`.

## One budget

Every run reads the same data with the same batch size (8 examples of each task per step), the same round-robin
schedule, the same number of epochs, the same dev evaluation after every epoch, and keeps its best checkpoint by
`eval_overall`; for a given seed, every run sees the same batches. The presets differ only in what the paper varies
(PALs, STS head, gradient surgery, frozen encoder); the learning rate is the Trainer's 5e-5, except `baseline`, which
keeps its frozen-encoder learning rate of 1e-3.

`baseline` is given `--task_schedule round_robin` instead of its preset's `sequential`. With the encoder frozen and
one head per task, no trainable parameter is shared, so the three tasks are trained independently under either
schedule: it is still the paper's "separate" baseline. What `sequential` changes is the budget: one pass over each
task's own rows (SST 1,068 steps of 8, STS 756, Quora 1,771), where a round-robin epoch gives every task 1,771 steps
of 8 examples (the smaller sets restart with a fresh shuffle), as in every other run.

## Resuming, records, statistics

Runs are run, resumed after a kill, gathered and committed by `experiments/runner.py` (`--commit_results` commits
each run's JSON as soon as it is written); what a run JSON holds is in `experiments/records.py`; the statistics over
seeds (the spread rule, Welch's p) in `experiments/seed_statistics.py`. Compared: every experiment against `naive`,
and `combined` against `cosine`.
"""

import argparse
import sys
from pathlib import Path

from trainer.checkpoints import write_json_atomically
from trainer.presets import PAPER_PRESETS, PRESETS

from . import runner
from .paper_figures import plot_conflicts, plot_losses
from .paper_table import build_table, format_table
from .records import load_records, row_of


def build_runs(args, passthrough: list[str]) -> list[runner.Run]:
    runs = []
    for seed in args.seeds:
        for preset in args.presets:
            output_dir = args.output_dir / f"{preset}-seed{seed}"
            flags = PRESETS[preset].reproduction_flags  # the preset's own flags beyond `--preset`: "One budget"
            argv = runner.row_argv(["--preset", preset], seed, output_dir, args.num_train_epochs, passthrough, flags)
            runs.append(
                runner.Run(preset, seed, output_dir, argv, args.results_dir / "runs" / f"{preset}-seed{seed}.json")
            )
    return runs


def write_table_and_figures(records: list[dict], results_dir: Path) -> list[Path]:
    table = build_table(records)
    write_json_atomically(results_dir / "table.json", table)
    (results_dir / "table.md").write_text(format_table(table))
    written = [results_dir / "table.md", results_dir / "table.json", plot_losses(records, results_dir / "losses.png")]
    conflicts = plot_conflicts(records, results_dir / "conflicts.png")
    if conflicts is not None:
        written.append(conflicts)
    return written


# ---- Command line ----


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0],
        epilog="Other flags are appended to every run_multitask.py command (e.g. --model_name_or_path, --max_steps).",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=runner.REPO / "outputs" / "paper",
        help="the runs' output dirs go here, one per run (default: outputs/paper)",
    )
    parser.add_argument(
        "--results_dir",
        type=Path,
        default=runner.REPO / "results" / "paper",
        help="runs/<preset>-seed<k>.json, table.md, table.json, losses.png, conflicts.png",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="default 0 1 2; with --table_only, every seed found"
    )
    parser.add_argument(
        "--presets", nargs="+", default=list(PAPER_PRESETS), choices=PAPER_PRESETS, help="default: all the paper's"
    )
    parser.add_argument("--num_train_epochs", type=float, default=1.0, help="the budget of every run (default 1)")
    parser.add_argument("--dry_run", action="store_true", help="print every run's command, one a line, and stop")
    parser.add_argument("--table_only", action="store_true", help="only rebuild table and figures from the run JSONs")
    parser.add_argument(
        "--commit_results",
        action="store_true",
        help="git-commit each run's JSON as it is written (and the table and figures at the end)",
    )
    args, passthrough = parser.parse_known_args(argv)
    for item in passthrough:
        if item.split("=", 1)[0] in runner.MANAGED_FLAGS:
            parser.error(f"{item.split('=', 1)[0]} is set by this script for every run.")
    if passthrough and not passthrough[0].startswith("--"):
        parser.error(f"unexpected argument {passthrough[0]!r}")
    args.presets = [p for p in PAPER_PRESETS if p in args.presets]  # the table's order
    args.output_dir, args.results_dir = args.output_dir.resolve(), args.results_dir.resolve()
    return args, passthrough


def paper_records(results_dir: Path, presets: list[str], seeds: list[int] | None) -> list[dict]:
    records = load_records(results_dir)
    return [r for r in records if row_of(r) in presets and (seeds is None or r["seed"] in seeds)]


def main(argv: list[str] | None = None) -> dict:
    """What happened: `{"ran": [...], "gathered": [...], "skipped": [...], "failed": [...], "written": [...]}`."""
    args, passthrough = parse_args(argv)
    outcome = {"ran": [], "gathered": [], "skipped": [], "failed": [], "written": []}
    if args.dry_run:
        for run in build_runs(argparse.Namespace(**{**vars(args), "seeds": args.seeds or [0, 1, 2]}), passthrough):
            print(run.command)
        return outcome
    runner.log_to_stderr()
    if args.table_only:
        records = paper_records(args.results_dir, args.presets, args.seeds)
        if not records:
            raise FileNotFoundError(f"No run JSONs for {args.presets} in {args.results_dir / 'runs'}.")
    else:
        args.seeds = args.seeds or [0, 1, 2]
        label = "Reproduce the paper" if args.commit_results else None
        outcome.update(runner.run_all(build_runs(args, passthrough), label))
        if outcome["failed"]:
            runner.logger.error(f"Failed: {', '.join(outcome['failed'])}; no table. Run again to resume them.")
            return outcome
        # Every run found, not only this invocation's: a run of some presets or seeds (two streams side by side,
        # a seed added later) must not replace the whole table with a part of it.
        records = paper_records(args.results_dir, list(PAPER_PRESETS), None)

    outcome["written"] = write_table_and_figures(records, args.results_dir)
    runner.logger.info(f"Wrote {', '.join(path.name for path in outcome['written'])} to {args.results_dir}")
    if args.commit_results and not args.table_only:
        seeds = sorted({record["seed"] for record in records})
        runner.commit_results(outcome["written"], f"Reproduce the paper: table and figures, seeds {seeds}")
    return outcome


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
