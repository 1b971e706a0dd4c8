# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Run configurations and complete checkpoints.

A training run writes `run_config.json` into its output directory: the options that make two runs the same run
(preset, tasks and their heads, model options, task schedule and gradient surgery). Every checkpoint gets a copy too,
written last, atomically, with the size of every file the checkpoint holds: a checkpoint folder without it (a run
killed while saving) or whose files do not match it (truncated since) is incomplete, and is never resumed from.
"""

import json
import math
import os
import re
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from modeling_bert_pals.configuration_bert_pals import DESCRIPTIVE_TASK_KEYS


RUN_CONFIG_NAME = "run_config.json"
RUN_CONFIG_VERSION = 1
# What a resumed run must share with its checkpoint. The optimisation options (learning rate, batch size, steps...)
# may change on resume: "resume with a lower learning rate" is the usual way out of a diverged run.
MODEL_KEYS = ("use_pals", "pal_size", "pal_num_heads", "sts_head", "pooling", "pal_decoder_init", "classifier_dropout")
TRAINING_KEYS = (
    "task_schedule",
    "gradient_surgery",
    "surgery_granularity",
    "gradvac_beta",
    "surgery_hyperparameters",
    "gradient_scaling",
    "per_task_max_grad_norm",
    "loss_weighting",
    "task_weights",
    "dwa_temperature",
    "dwa_period_steps",
    "surgery_eps",
    "freeze_encoder",
    "ema_decay",
    # The seed orders the batches (and GradVac's task order): another seed would continue another run's data order.
    "seed",
    "data_seed",
)
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def build_run_config(model_config, args, preset: str | None = None, data: dict | None = None) -> dict[str, Any]:
    """
    The options that identify a run, from the model's `BertPalsConfig` and the `MultitaskTrainingArguments`, and
    `data`: what identifies its training data (e.g. a fingerprint of each task's files), compared on resume too.
    """
    config = {
        "version": RUN_CONFIG_VERSION,
        "preset": preset,
        # Class names describe the outputs: a run resumed with or without them is the same run.
        "tasks": {
            name: {key: value for key, value in spec.items() if key not in DESCRIPTIVE_TASK_KEYS}
            for name, spec in model_config.tasks.items()
        },
        "model": {key: getattr(model_config, key, None) for key in MODEL_KEYS},
        "training": {key: getattr(args, key, None) for key in TRAINING_KEYS},
    }
    if data is not None:
        config["data"] = data
    return config


def describe_run(run_config: dict[str, Any]) -> str:
    """A short description: `preset 'combined', tasks ['sst', 'para', 'sts'], surgery 'gradvac'`."""
    preset = run_config.get("preset")
    training = run_config.get("training", {})
    parts = [f"preset {preset!r}"] if preset else []
    parts.append(f"tasks {list(run_config.get('tasks', {}))}")
    parts.append(f"surgery {training.get('gradient_surgery')!r}")
    return ", ".join(parts)


def run_config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """
    What differs between two run configurations, one `name: saved ..., now ...` line per option. The task order is
    not compared (`tasks_in_saved_order` puts the tasks of this run in the saved order); the preset only when both
    runs name one (the options it stands for are compared anyway).
    """
    differences = []
    if saved.get("preset") and current.get("preset") and saved["preset"] != current["preset"]:
        differences.append(f"preset: {saved['preset']!r} there, {current['preset']!r} now")
    saved_tasks, current_tasks = saved.get("tasks", {}), current.get("tasks", {})
    if set(saved_tasks) != set(current_tasks):
        differences.append(f"tasks: {sorted(saved_tasks)} there, {sorted(current_tasks)} now")
    else:
        for task in saved_tasks:
            if saved_tasks[task] != current_tasks[task]:
                differences.append(f"task {task!r}: {saved_tasks[task]} there, {current_tasks[task]} now")
    # A key the saved configuration lacks was not recorded by the version that wrote it: not compared.
    for section in ("model", "training", "data"):
        for key in sorted(set(saved.get(section, {})) & set(current.get(section, {}))):
            a, b = saved[section][key], current[section][key]
            if a == b or (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b)):
                continue
            name = f"training data of task {key!r}" if section == "data" else key
            differences.append(f"{name}: {a!r} there, {b!r} now")
    return differences


def write_json_atomically(path: str, data: dict[str, Any]) -> None:
    """Writes `path` so that it is either absent, the old file, or the complete new one, also after a kill."""
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text_atomically(path: str, text: str) -> None:
    """Writes `text` aside, then renames it to `path`: a kill leaves the old file or the new one, never a part."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def read_run_config(directory: str) -> dict[str, Any] | None:
    """The `run_config.json` of a folder, None if it has none; a `ValueError` naming the file if it is damaged."""
    path = os.path.join(directory, RUN_CONFIG_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: damaged run configuration ({error}).") from error
    if not isinstance(data, dict) or "tasks" not in data:
        raise ValueError(f"{path}: not a run configuration written by run_multitask.py / MultitaskTrainer.")
    return data


def list_files(directory: str) -> dict[str, int]:
    """`{relative path: size in bytes}` of every file below `directory`."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, directory)] = os.path.getsize(path)
    return files


def mark_checkpoint_complete(checkpoint: str, run_config: dict[str, Any], step: int, loss: float | None) -> None:
    """The last write of a checkpoint: its run configuration plus the size of every file it holds."""
    files = {name: size for name, size in list_files(checkpoint).items() if not name.startswith(RUN_CONFIG_NAME)}
    data = {**run_config, "checkpoint": {"step": step, "training_loss": loss, "files": files}}
    write_json_atomically(os.path.join(checkpoint, RUN_CONFIG_NAME), data)


def checkpoint_problem(checkpoint: str) -> str | None:
    """None for a complete checkpoint, else what is wrong with it, in a few words."""
    if not os.path.isdir(checkpoint):
        return "no such folder"
    try:
        saved = read_run_config(checkpoint)
    except ValueError as error:
        return str(error)
    if saved is None or "checkpoint" not in saved:
        return f"it has no {RUN_CONFIG_NAME}: its save did not finish (or an older version wrote it)"
    for name, size in saved["checkpoint"].get("files", {}).items():
        path = os.path.join(checkpoint, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        if os.path.getsize(path) != size:
            return f"{name} has {os.path.getsize(path)} bytes, {size} when it was saved (truncated or changed)"
    return None


def checkpoint_step(path: str) -> int | None:
    match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def find_checkpoints(output_dir: str) -> tuple[list[str], dict[str, str]]:
    """The complete checkpoints of `output_dir` by step, and `{checkpoint: problem}` for the incomplete ones."""
    if not os.path.isdir(output_dir):
        return [], {}
    folders = [os.path.join(output_dir, name) for name in os.listdir(output_dir) if _CHECKPOINT_RE.match(name)]
    folders = sorted((path for path in folders if os.path.isdir(path)), key=checkpoint_step)
    complete, incomplete = [], {}
    for folder in folders:
        problem = checkpoint_problem(folder)
        if problem is None:
            complete.append(folder)
        else:
            incomplete[folder] = problem
    return complete, incomplete


def last_complete_checkpoint(output_dir: str) -> str:
    """The complete checkpoint with the highest step in `output_dir`; a `ValueError` saying why there is none."""
    complete, incomplete = find_checkpoints(output_dir)
    if complete:
        return complete[-1]
    skipped = "".join(f"; {path} is incomplete: {problem}" for path, problem in incomplete.items())
    raise ValueError(f"No complete checkpoint to resume from in {output_dir}{skipped}.")


def tasks_in_saved_order(tasks: list[str], saved: dict[str, Any] | None) -> list[str]:
    """`tasks` in the order a saved run used, when they are the same set; else unchanged."""
    saved_tasks = list((saved or {}).get("tasks", {}))
    return saved_tasks if sorted(saved_tasks) == sorted(tasks) else list(tasks)


def check_checkpoint(checkpoint: str, run_config: dict[str, Any], required_files: tuple[str, ...] = ()) -> None:
    """
    Raises unless `checkpoint` is complete (every file it listed when its save finished is there, in full), holds
    `required_files`, and was written by a run with the configuration `run_config`: the error says what differs.
    """
    problem = checkpoint_problem(checkpoint)
    if problem == "no such folder":
        raise FileNotFoundError(f"Checkpoint {checkpoint}: no such folder.")
    if problem is not None:
        complete, _ = find_checkpoints(os.path.dirname(os.path.normpath(checkpoint)))
        hint = f" The last complete checkpoint beside it is {complete[-1]}." if complete else ""
        raise ValueError(f"Checkpoint {checkpoint} is incomplete: {problem.rstrip('.')}.{hint}")
    saved = read_run_config(checkpoint)
    differences = run_config_differences(saved, run_config)
    if differences:
        raise ValueError(
            f"Checkpoint {checkpoint} belongs to another run ({describe_run(saved)}), not to this one "
            f"({describe_run(run_config)}): {'; '.join(differences)}. Resume with that run's options, or train into "
            "another output directory."
        )
    if list(saved["tasks"]) != list(run_config["tasks"]):
        raise ValueError(
            f"Checkpoint {checkpoint} has the tasks in the order {list(saved['tasks'])}, this model in the order "
            f"{list(run_config['tasks'])}: build the model with the checkpoint's order (the schedule and the "
            "gradient-surgery state follow it)."
        )
    for name in required_files:
        if not os.path.isfile(os.path.join(checkpoint, name)):
            raise ValueError(f"Checkpoint {checkpoint} has no {name}, which this run needs to resume.")
