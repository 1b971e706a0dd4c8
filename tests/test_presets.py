# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""trainer/presets.py: every preset's values and reproduction flags parse through the CLI, land where they say and
make a valid model configuration; the paper's numbers are one per paper task, then overall."""

import pytest

import run_multitask
from trainer.presets import PAPER_PRESETS, PRESETS, Preset
from trainer.tasks import OVERALL, PAPER_TASKS


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_parses_through_the_cli_and_sets_its_values(name, tmp_path):
    preset = PRESETS[name]
    argv = ["--preset", name, "--output_dir", str(tmp_path), *preset.reproduction_flags]
    parsed = run_multitask.parse_args(argv)
    model_args, data_args, training_args = parsed
    run_multitask.build_config(model_args, data_args.tasks)  # every option valid together
    flags = dict(zip(preset.reproduction_flags[::2], preset.reproduction_flags[1::2]))
    for key, value in preset.values.items():
        (holder,) = [args for args in parsed if hasattr(args, key)]
        expected = flags.get(f"--{key}", value)  # the reproduction's own flags win over the preset's defaults
        assert getattr(holder, key) == expected, key
    assert training_args.num_train_epochs == (preset.epochs or 3.0)  # 3: the Trainer's default


def test_the_paper_presets_carry_the_paper_numbers():
    assert PAPER_PRESETS == ("baseline", "naive", "gradvac", "pals", "cosine", "combined")  # the paper's table order
    combined = PRESETS["combined"].paper_results
    assert list(combined) == [*PAPER_TASKS, OVERALL] and combined[OVERALL] == 0.671
    assert PRESETS["best"].paper_results is None and PRESETS["best"].epochs == 2
    # The paper's overall is the mean of its task numbers, to its rounding.
    for name in PAPER_PRESETS:
        *tasks, overall = PRESETS[name].paper
        assert abs(sum(tasks) / len(tasks) - overall) < 1e-3, name
    with pytest.raises(ValueError, match="one number per task"):
        Preset("short", "Short", paper=(0.5, 0.5))
