# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The experiments, run from the repository root as modules: `python -m experiments.reproduce_paper` (the paper's
Table 1 and figures), `experiments.recipe_ablation` (the recipe beyond it), `experiments.methods_screen` (every
multitask method on it), `experiments.frozen_floor` (what frozen features give).

`runner` runs, resumes, gathers and commits their runs (each an ordinary `run_multitask.py` command); `records` is
what a run's JSON holds; `seed_statistics`, `tables`, `paper_table` and `paper_figures` make the reports. Presets,
tasks and metric keys come from `trainer.presets` and `trainer.tasks`.
"""
