# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Faults of the model API (inputs, labels, config tasks) give a one-line `ValueError` naming the limit or value."""

import json
import re

import pytest
import torch
from conftest import tiny_config

from modeling_bert_pals import BertPalsConfig, BertPalsForMultitask


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BertPalsForMultitask(tiny_config()).eval()  # max_position_embeddings=64


def pair(input_ids, input_ids_b=None):
    return dict(input_ids=input_ids, input_ids_b=input_ids if input_ids_b is None else input_ids_b)


IDS = torch.randint(1, 99, (4, 7), generator=torch.Generator().manual_seed(0))
EMPTY_ROWS, EMPTY_COLUMNS = torch.zeros(0, 7, dtype=torch.long), torch.zeros(4, 0, dtype=torch.long)


# ---- 1. An empty batch ----


@pytest.mark.parametrize(
    "task, inputs, name",
    [
        ("sst", dict(input_ids=EMPTY_ROWS), "input_ids"),
        ("sst", dict(input_ids=EMPTY_COLUMNS), "input_ids"),
        ("para", pair(EMPTY_ROWS), "input_ids"),
        ("sts", pair(IDS, EMPTY_COLUMNS), "input_ids_b"),  # was silently encoded as all padding
    ],
)
def test_empty_batch_is_rejected(model, task, inputs, name):
    with pytest.raises(ValueError, match=rf"Task '{task}': `{name}` is an empty batch \(shape \[\d+, \d+\]\)"):
        model(task=task, **inputs)


# ---- 2. Longer than the position embeddings ----


@pytest.mark.parametrize(
    "task, inputs, name",
    [
        ("sst", dict(input_ids=torch.randint(1, 99, (2, 80))), "input_ids"),
        ("para", pair(IDS, torch.randint(1, 99, (4, 80))), "input_ids_b"),
    ],
)
def test_inputs_longer_than_the_position_embeddings_are_rejected(model, task, inputs, name):
    message = rf"`{name}` has 80 tokens; the model has 64 position embeddings \(max_position_embeddings\).*truncat"
    with pytest.raises(ValueError, match=message):
        model(task=task, **inputs)
    assert model(task="sst", input_ids=torch.randint(1, 99, (2, 64))).logits.shape == (2, 5)  # the limit itself


# ---- 3. Labels out of the task's range ----


@pytest.mark.parametrize("sts_head", ["cosine", "linear"])
@pytest.mark.parametrize("bad, shown", [(7.0, "7"), (-1.0, "-1"), (float("nan"), "nan")])
def test_regression_labels_out_of_the_score_range_are_rejected(sts_head, bad, shown):
    model = BertPalsForMultitask(tiny_config(sts_head=sts_head)).eval()
    labels = torch.tensor([0.0, 2.5, bad, 5.0])
    with pytest.raises(ValueError, match=rf"Task 'sts': `labels` must be scores in \[0, 5\]; got {shown}\."):
        model(task="sts", **pair(IDS), labels=labels)
    assert model(task="sts", **pair(IDS), labels=torch.tensor([0.0, 2.5, 1.0, 5.0])).loss.isfinite()  # both ends


@pytest.mark.parametrize("task, num_labels, bad", [("sst", 5, 5), ("sst", 5, -1), ("para", 2, 2)])
def test_class_labels_out_of_range_are_rejected(model, task, num_labels, bad):
    expected = rf"class indices in \[0, {num_labels}\) \(or -100, ignored\)"
    message = rf"Task '{task}': `labels` must be {expected}; got {bad}\."
    inputs = dict(input_ids=IDS) if task == "sst" else pair(IDS)
    with pytest.raises(ValueError, match=message):
        model(task=task, **inputs, labels=torch.tensor([0, 1, bad, 0]))
    with pytest.raises(ValueError, match=message):  # beside an ignored label
        model(task=task, **inputs, labels=torch.tensor([-100, 1, bad, 0]))
    # -100 stays cross-entropy's ignored label.
    assert model(task=task, **inputs, labels=torch.tensor([0, 1, -100, 0])).loss.isfinite()


# ---- 4. A task name that cannot name a module ----


@pytest.mark.parametrize("name", ["my.task", "", 1])
def test_task_names_that_cannot_name_a_module_are_rejected(name):
    tasks = {name: {"kind": "classification", "num_labels": 2}}
    message = rf"Task name {re.escape(repr(name))}: a task name must be a non-empty string without '\.'"
    with pytest.raises(ValueError, match=message):
        tiny_config(tasks=tasks)


# ---- 5. `tasks` that is not a dict ----


TASKS_NOT_A_DICT = r"`tasks` must be a dict \{name: \{\"kind\": \.\.\., \"num_labels\": \.\.\.\}\}; got"


@pytest.mark.parametrize("tasks", ["sst", ["sst", "para"]])
def test_tasks_that_are_not_a_dict_are_rejected(tasks, tmp_path):
    with pytest.raises(ValueError, match=rf"{TASKS_NOT_A_DICT} {type(tasks).__name__}"):
        tiny_config(tasks=tasks)
    # The same in a config.json.
    tiny_config().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "tasks": tasks}))
    with pytest.raises(ValueError, match=rf"{TASKS_NOT_A_DICT} {type(tasks).__name__}"):
        BertPalsConfig.from_pretrained(tmp_path)


def test_task_entries_that_are_not_a_dict_are_rejected():
    message = r"Task 'sst' must be a dict \{\"kind\": \.\.\., \"num_labels\": \.\.\.\}; got str 'classification'\."
    with pytest.raises(ValueError, match=message):
        tiny_config(tasks={"sst": "classification"})
