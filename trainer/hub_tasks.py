# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Tasks from Hub (or any `datasets`) datasets, brought to the columns of their registry entry ([`~trainer.tasks.Task`]):
`id`, the text columns and `label`, checked row by row as the CS224N files are.

The registry names a Hub source for the course tasks (`Task.hub`; the column mapping is *source column -> task
column*):

| task | dataset (config)         | mapping                                                                      |
|------|--------------------------|------------------------------------------------------------------------------|
| sst  | `SetFit/sst5`            | text -> sentence, label -> label (0-4); no id: the row index                 |
| para | `nyu-mll/glue` (`qqp`)   | question1 -> sentence1, question2 -> sentence2, label -> label, idx -> id    |
| sts  | `nyu-mll/glue` (`stsb`)  | sentence1, sentence2, label (0.0-5.0), idx -> id                             |

Unlabeled splits: GLUE's test splits carry label `-1`. A split whose labels are *all* `-1` or null is treated as
unlabeled and gets `label = None` (as the `test-student` files do in the builder). Otherwise each row's label is
validated as the builder does: bad rows are skipped with one warning naming the dataset, the count and the first row
indices (0-based, in the input dataset); `strict=True` raises a `ValueError` instead.

Ids: in a split named `validation*` or `test*` (`Dataset.split`) an id repeated among the rows kept raises a
`ValueError` naming the dataset, both row indices and the id, in both modes (the predictions are written by id). A
train split, or a dataset without a split name, may repeat ids. Without an id column the ids are row indices: unique.

Nothing in here is exercised against the Hub in the tests (no network): `to_task_columns` is tested on in-memory
datasets.
"""

from collections.abc import Mapping
from typing import Any

import datasets
from transformers.utils import logging

from .cs224n_builder import check_unique_ids, format_bad_rows, normalize_sentence
from .tasks import get_task


logger = logging.get_logger(__name__)


def _is_missing_label(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == -1)


def to_task_columns(
    dataset: datasets.Dataset,
    task: str,
    column_mapping: Mapping[str, str] | None = None,
    *,
    normalize: bool = False,
    strict: bool = False,
) -> datasets.Dataset:
    r"""
    Renames and selects `dataset`'s columns into the columns of the registered `task`.

    Args:
        dataset (`datasets.Dataset`):
            In memory or Arrow-backed.
        task (`str`):
            A registered task ("sst", "para", "sts", "cfimdb" or one of yours).
        column_mapping (`Mapping[str, str]`, *optional*):
            `{source_column: task_column}`; task columns not mapped are looked up under their own name.
        normalize (`bool`, defaults to `False`):
            Apply the course's normalisation to the sentences (off: the text is kept as it is, stripped).
        strict (`bool`, defaults to `False`):
            Raise a `ValueError` on the first bad row instead of skipping it.

    Returns:
        A new `Dataset` with exactly the columns and features of `Task.features()`: `id` (a string; the row index
        when there is no id column), the sentence column(s), `label` (`ClassLabel` or float32; `None` for an
        unlabeled split). Missing columns raise a `ValueError` naming them and the dataset's columns.
    """
    spec = get_task(task)
    features = spec.features()
    source_of = _source_columns(dataset, task, features, spec.text_columns, column_mapping)
    name = _dataset_name(dataset)

    n = len(dataset)
    ids = list(dataset[source_of["id"]]) if source_of["id"] in dataset.column_names else list(range(n))
    texts = {col: list(dataset[source_of[col]]) for col in spec.text_columns}
    raw_labels = list(dataset[source_of["label"]])
    unlabeled = n > 0 and all(_is_missing_label(v) for v in raw_labels)
    if unlabeled:
        logger.info(f"{name}: all {n} labels are -1/None: unlabeled split, label set to None")

    out: dict[str, list] = {col: [] for col in features}
    bad: list[tuple[int, str]] = []
    kept_ids: list[tuple[int, str]] = []
    for i in range(n):
        row_texts = {col: texts[col][i] for col in spec.text_columns}
        ident, row_texts, label, reasons = _check_row(spec, ids[i], row_texts, raw_labels[i], normalize, unlabeled)
        if reasons:
            reason = "; ".join(reasons)
            if strict:
                raise ValueError(f"{name}: row {i}: {reason}")
            bad.append((i, reason))
            continue
        kept_ids.append((i, ident))
        out["id"].append(ident)
        for col in spec.text_columns:
            out[col].append(row_texts[col])
        out["label"].append(label)
    # As for the dev/test files: a repeated id would make the prediction file ambiguous.
    if str(dataset.split or "").startswith(("validation", "test")):
        check_unique_ids(name, kept_ids, unit="row")
    if bad:
        logger.warning(format_bad_rows(name, bad, n, unit="row"))
    return datasets.Dataset.from_dict(out, features=features, split=dataset.split)


def _source_columns(
    dataset: datasets.Dataset, task: str, features, text_columns, column_mapping: Mapping[str, str] | None
) -> dict[str, str]:
    """`{task_column: source_column}`; a `ValueError` names a mapping target that is no task column, or a source
    column the dataset lacks."""
    mapping = dict(column_mapping or {})
    unknown = sorted(set(mapping.values()) - set(features))
    if unknown:
        raise ValueError(f"column_mapping targets {unknown} are not task columns; {task} has {list(features)}")
    source_of = {target: target for target in features}
    source_of.update({target: source for source, target in mapping.items()})
    required = [*text_columns, "label"]
    missing = [source_of[t] for t in required if source_of[t] not in dataset.column_names]
    if "id" in mapping.values() and source_of["id"] not in dataset.column_names:
        missing.append(source_of["id"])
    if missing:
        raise ValueError(
            f"{task}: missing column(s) {missing} in the dataset; dataset columns: {dataset.column_names}"
        )
    return source_of


def _dataset_name(dataset: datasets.Dataset) -> str:
    """The dataset as the messages name it: `name/config[split]`."""
    name = dataset.info.dataset_name or "dataset"
    if dataset.info.config_name and dataset.info.config_name != "default":
        name += f"/{dataset.info.config_name}"
    if dataset.split is not None:
        name += f"[{dataset.split}]"
    return name


def _check_row(
    spec, raw_id: Any, raw_texts: dict[str, Any], raw_label: Any, normalize: bool, unlabeled: bool
) -> tuple[str, dict[str, str], Any, list[str]]:
    """One row as `(id, texts, label, reasons)`: the row is bad if `reasons` is not empty."""
    reasons = []
    ident = "" if raw_id is None else str(raw_id).strip()
    if not ident:
        reasons.append("empty id")
    row_texts = {}
    for col, raw in raw_texts.items():
        if not isinstance(raw, str):
            reasons.append(f"{col!r} is not a string ({raw!r})")
            continue
        text = normalize_sentence(raw) if normalize else raw.strip()
        if not text:
            reasons.append(f"empty {col!r}")
        row_texts[col] = text
    label = None
    if not unlabeled:
        label, problem = spec.parse_label(raw_label)
        if problem:
            reasons.append(problem)
    return ident, row_texts, label, reasons


def load_hub_task(
    task: str,
    dataset_id: str | None = None,
    config: str | None = None,
    column_mapping: Mapping[str, str] | None = None,
    *,
    normalize: bool = False,
    strict: bool = False,
    **load_kwargs,
) -> datasets.DatasetDict:
    """
    `datasets.load_dataset` and `to_task_columns` on every split (needs Hub access, or the `datasets` cache).

    Without `dataset_id`, the task's registry entry (`Task.hub`) gives the dataset, config and mapping. `load_kwargs`
    go to `load_dataset` (e.g. `split=`, `cache_dir=`; not `streaming=True`).
    """
    spec = get_task(task)
    if dataset_id is None:
        if spec.hub is None:
            raise ValueError(f"Task {task!r} names no Hub source in its registry entry; pass dataset_id.")
        dataset_id, config = spec.hub.dataset_id, config or spec.hub.config
        column_mapping = spec.hub.column_mapping if column_mapping is None else column_mapping
    raw = datasets.load_dataset(dataset_id, config, **load_kwargs)
    if isinstance(raw, datasets.Dataset):
        raw = datasets.DatasetDict({str(load_kwargs.get("split") or raw.split or "train"): raw})
    if not isinstance(raw, datasets.DatasetDict):
        raise TypeError(f"load_hub_task needs map-style datasets, got {type(raw).__name__}")
    return datasets.DatasetDict(
        {
            split: to_task_columns(ds, task, column_mapping, normalize=normalize, strict=strict)
            for split, ds in raw.items()
        }
    )
