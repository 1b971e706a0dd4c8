# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Prediction files in the CS224N course's submission format."""

import os
import shutil
from pathlib import Path

from .checkpoints import write_text_atomically
from .tasks import get_task


def write_predictions(path: Path, task: str, ids, predictions) -> Path:
    """
    Writes `id \\t {header} ` then one `id , prediction` line per example, as the course's starter code does; the
    header is the task's `prediction_header`.
    """
    if len(ids) != len(predictions):
        raise ValueError(f"{path}: {len(ids)} ids but {len(predictions)} predictions.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"id \t {get_task(task).prediction_header} \n"]
    for example_id, prediction in zip(ids, predictions):
        lines.append(f"{example_id} , {prediction.item() if hasattr(prediction, 'item') else prediction} \n")
    write_text_atomically(str(path), "".join(lines))
    return path


def replace_folder(new: Path, old: Path) -> None:
    """
    Puts the complete folder `new` in the place of `old`, so that a folder of prediction files always comes from one
    model: `old` is renamed aside first and deleted once `new` is in place. A kill in between leaves both folders,
    under names that say which is which, and nothing mixed.
    """
    aside = old.with_name(f"{old.name}.replaced")
    if aside.exists():
        shutil.rmtree(aside)
    if old.exists():
        os.replace(old, aside)
    os.replace(new, old)
    if aside.exists():
        shutil.rmtree(aside)


def read_predictions(path: Path) -> dict[str, str]:
    """The inverse of `write_predictions`: {id: prediction}."""
    with open(path) as f:
        next(f)
        rows = [line.rsplit(" , ", 1) for line in f if line.strip()]
    return {example_id.strip(): value.strip() for example_id, value in rows}
