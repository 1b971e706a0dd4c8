# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""experiments/recipe_ablation.py: every row is a valid run_multitask.py command with the reproduction's budget, and
its `combined` row is the paper reproduction's own run."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import run_multitask


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "recipe_ablation.py"


def test_every_row_is_a_valid_command_with_one_budget(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry_run", "--output_dir", str(tmp_path / "recipe"), "--paper_output_dir",
         str(tmp_path / "paper"), "--seeds", "0", "1"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    paper = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "reproduce_paper.py"), "--dry_run", "--output_dir",
         str(tmp_path / "paper"), "--seeds", "0", "1", "--presets", "combined"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert set(paper) <= set(lines)  # the `combined` rows are the reproduction's commands, run once for both
    configs = set()
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["python", "run_multitask.py"]
        model_args, data_args, training_args = run_multitask.parse_args(argv[2:])
        assert (training_args.num_train_epochs, training_args.per_device_train_batch_size) == (1, 8)
        assert training_args.eval_strategy == "epoch" and training_args.load_best_model_at_end
        config = run_multitask.build_config(model_args, data_args.tasks)  # every option valid together
        configs.add((json.dumps(config.tasks, sort_keys=True), config.pooling, training_args.seed))
    assert len(configs) == len(lines)  # each row changes something
