# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""experiments.methods_screen: one row per method, scaling and loss weighting, each a valid run_multitask.py
command that changes one thing of `best`, at the budget asked for (1 epoch for the screen), in runs named by it."""

import shlex
import subprocess
import sys
from pathlib import Path

import run_multitask
from trainer.surgery import SURGERIES


REPO = Path(__file__).resolve().parents[1]
CHANGED = ("gradient_surgery", "gradient_scaling", "max_grad_norm", "task_weights", "loss_weighting")


def test_every_row_is_one_change_from_best_at_the_asked_budget(tmp_path):
    best = run_multitask.parse_args(["--preset", "best", "--output_dir", str(tmp_path)])[2]
    for epochs in ("1", "2"):
        lines = subprocess.run(
            [sys.executable, "-m", "experiments.methods_screen", "--dry_run", "--output_dir", str(tmp_path),
             "--num_train_epochs", epochs],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        assert len(lines) == len(SURGERIES) + 6
        changes = set()
        for line in lines:
            argv = shlex.split(line)
            _, _, args = run_multitask.parse_args(argv[2:])
            assert args.num_train_epochs == float(epochs) and args.output_dir.endswith(f"-e{epochs}-seed0")
            changed = tuple(
                (key, str(getattr(args, key))) for key in CHANGED if getattr(args, key) != getattr(best, key)
            )
            assert len({key for key, _ in changed} - {"max_grad_norm"}) <= 1, (
                line
            )  # clip_per_task also unclips the sum
            changes.add(changed)
        assert len(changes) == len(lines)  # every row changes something else (`none` changes nothing)
