#!/usr/bin/env python
# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Training time of the paper's six experiments, side by side: seconds per round-robin step and minutes per epoch.

    python benchmarks/bench_presets.py [--max_steps 40] [--rounds 2] [--presets naive combined] [-- extra flags]

Each preset runs the paper reproduction's command (`python -m experiments.reproduce_paper`: batch 8 per task, each
preset's `reproduction_flags` from `trainer.presets`, so the baseline round-robin) for `--max_steps` training steps
in a fresh `run_multitask.py` process, the presets in turn and in reverse order on the next round, so that a
machine's drift hits them alike. The time per epoch is the median seconds
per step times the reproduction's 1,771 steps; the paper gives 47 minutes (naive) and 2 hours (combined) per epoch
on its GPU, a ratio of 2.55.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from bench_throughput import REPO, parse_run_args, run  # the script's own folder is on the path

from trainer.presets import PAPER_PRESETS, PRESETS


STEPS_PER_EPOCH = 1771  # 14,168 Quora training pairs / 8: the reproduction's epoch
REFERENCE = "naive"  # the reference of the ratios, as of the paper's timing


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    # The first preset is the reference of the ratios; the paper's presets from it on, in the paper's order.
    start = PAPER_PRESETS.index(REFERENCE)
    parser.add_argument("--presets", nargs="+", default=[*PAPER_PRESETS[start:], *PAPER_PRESETS[:start]])
    args, extra = parse_run_args(parser, max_steps=40, seed=0)
    seconds = {preset: [] for preset in args.presets}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = args.presets if round_ % 2 == 0 else args.presets[::-1]
            for preset in order:
                options = argparse.Namespace(**{**vars(args), "preset": preset})
                flags = [*PRESETS[preset].reproduction_flags, *extra]
                result = run(REPO, Path(tmp) / f"{preset}-{round_}", options, flags)
                seconds[preset].append(result["train_runtime"] / args.max_steps)
                print(f"round {round_} {preset}: {seconds[preset][-1]:.3f} s/step", flush=True)
    reference = statistics.median(seconds[args.presets[0]])
    print(f"\n| preset | s/step | min/epoch ({STEPS_PER_EPOCH} steps) | vs {args.presets[0]} | paper min/epoch |")
    print("|---|---|---|---|---|")
    for preset in args.presets:
        step = statistics.median(seconds[preset])
        paper = PRESETS[preset].paper_epoch_minutes or "-"
        print(f"| {preset} | {step:.3f} | {step * STEPS_PER_EPOCH / 60:.1f} | {step / reference:.2f}x | {paper} |")


if __name__ == "__main__":
    main()
