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

Each preset runs the paper reproduction's command (`experiments/reproduce_paper.py`: batch 8 per task, the baseline
round-robin) for `--max_steps` training steps in a fresh `run_multitask.py` process, the presets in turn and in
reverse order on the next round, so that a machine's drift hits them alike. The time per epoch is the median seconds
per step times the reproduction's 1,771 steps; the paper gives 47 minutes (naive) and 2 hours (combined) per epoch
on its GPU, a ratio of 2.55.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
sys.path.insert(0, str(REPO / "benchmarks"))

import reproduce_paper  # noqa: E402
from bench_throughput import parse_run_args, run  # noqa: E402


STEPS_PER_EPOCH = 1771  # 14,168 Quora training pairs / 8: the reproduction's epoch


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    # The first preset is the reference of the ratios: naive, as the paper's timing.
    parser.add_argument("--presets", nargs="+", default=["naive", "gradvac", "pals", "cosine", "combined", "baseline"])
    args, extra = parse_run_args(parser, max_steps=40, seed=0)
    seconds = {preset: [] for preset in args.presets}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = args.presets if round_ % 2 == 0 else args.presets[::-1]
            for preset in order:
                options = argparse.Namespace(**{**vars(args), "preset": preset})
                flags = reproduce_paper.PRESET_FLAGS.get(preset, []) + extra
                result = run(REPO, Path(tmp) / f"{preset}-{round_}", options, flags)
                seconds[preset].append(result["train_runtime"] / args.max_steps)
                print(f"round {round_} {preset}: {seconds[preset][-1]:.3f} s/step", flush=True)
    reference = statistics.median(seconds[args.presets[0]])
    print(f"\n| preset | s/step | min/epoch ({STEPS_PER_EPOCH} steps) | vs {args.presets[0]} | paper min/epoch |")
    print("|---|---|---|---|---|")
    for preset in args.presets:
        step = statistics.median(seconds[preset])
        paper = reproduce_paper.PAPER_EPOCH_MINUTES.get(preset, "-")
        print(f"| {preset} | {step:.3f} | {step * STEPS_PER_EPOCH / 60:.1f} | {step / reference:.2f}x | {paper} |")


if __name__ == "__main__":
    main()
