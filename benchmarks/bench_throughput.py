# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Training throughput of the README main command: this checkout against an earlier commit, side by side.

Both run the same command (`--preset combined`, batch 8 per task, the packaged MiniLM, `../shared/data`) for the same
`--max_steps`, alternating old, new, old, new, ... on this machine; each reports the Trainer's own
`train_samples_per_second` (training steps only, no start-up, no evaluation). The ratio of the medians is printed.
The earlier commit is checked out with `git worktree` into a temporary folder and run from there.

    python benchmarks/bench_throughput.py [--baseline ad3e25d] [--max_steps 100] [--rounds 2] [-- extra flags]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def run(checkout: Path, output_dir: Path, args, extra: list[str]) -> dict:
    command = [
        sys.executable, "run_multitask.py", "--preset", args.preset, "--output_dir", str(output_dir),
        "--do_train", "--max_steps", str(args.max_steps), "--per_device_train_batch_size", "8",
        "--logging_steps", "50", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
        "--seed", str(args.seed), "--data_dir", str(args.data_dir), *extra,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} (in {checkout}) failed:\n{result.stderr[-3000:]}")
    return json.loads((output_dir / "train_results.json").read_text())


def parse_run_args(parser: argparse.ArgumentParser, max_steps: int, seed: int) -> tuple[argparse.Namespace, list]:
    """Adds what `run` reads (and `--rounds`), parses; unknown flags, after an optional `--`, go to every run."""
    parser.add_argument("--max_steps", type=int, default=max_steps)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternating the order")
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--data_dir", type=Path, default=REPO.parent / "shared" / "data")
    args, extra = parser.parse_known_args()
    return args, [a for a in extra if a != "--"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="ad3e25d", help="the commit to compare against")
    parser.add_argument("--preset", default="combined")
    args, extra = parse_run_args(parser, max_steps=100, seed=42)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(old), args.baseline], cwd=REPO, check=True, capture_output=True
        )
        try:
            speeds = {"old": [], "new": []}
            losses = {}
            for round_ in range(args.rounds):
                order = [("old", old), ("new", REPO)] if round_ % 2 == 0 else [("new", REPO), ("old", old)]
                for name, checkout in order:
                    result = run(checkout, Path(tmp) / f"{name}-{round_}", args, extra)
                    speeds[name].append(result["train_samples_per_second"])
                    losses[name] = result["train_loss"]
                    print(
                        f"round {round_} {name}: {result['train_samples_per_second']:.3f} samples/s, "
                        f"train_runtime {result['train_runtime']:.1f} s, train_loss {result['train_loss']:.4f}",
                        flush=True,
                    )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, check=False)
    old_speed, new_speed = statistics.median(speeds["old"]), statistics.median(speeds["new"])
    print(
        f"{args.preset}, {args.max_steps} steps, batch 8 per task: baseline {args.baseline} {old_speed:.3f} "
        f"samples/s, this checkout {new_speed:.3f} samples/s: {new_speed / old_speed:.2f}x"
    )


if __name__ == "__main__":
    main()
