# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Probes of trainer.cs224n_builder on copies of the real files: a label column in a test file is ignored (every test
id kept and predicted), a repeated id in a dev or test file is an error, a repeated id in a train file is not."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import csv
import logging
import re
from pathlib import Path

import datasets
import pytest
import torch
from conftest import tiny_args

import run_multitask
from trainer.cs224n_builder import load_cs224n
from trainer.hub_tasks import to_task_columns
from trainer.predictions import read_predictions
from trainer.tasks import TASKS


BUILDER_LOGGER = "trainer.cs224n_builder"

datasets.disable_progress_bars()


def _rows(path: Path, n: int) -> tuple[list[str], list[list[str]]]:
    """The header and the first `n` records of a real file (csv parse)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader)
        return header, [row for _, row in zip(range(n), reader)]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """One record per physical line (the copied rows hold no newline), so data row k is line k + 1."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerows([header, *rows])
    return path


def _copy(data_dir: Path, d: Path, name: str, n: int, as_name: str | None = None) -> tuple[list[str], list[list[str]]]:
    header, rows = _rows(data_dir / name, n)
    _write(d / (as_name or name), header, rows)
    return header, rows


def _sts_data(data_dir: Path, tmp_path: Path, n_test: int = 40) -> tuple[Path, Path, list[str]]:
    """STS train/dev (24 rows each) and a test file of `n_test` dev rows that keeps the `similarity` column, empty on
    every third row (rows 0, 3, ...: 14 of 40), plus one unparsable and one out-of-range label."""
    d = tmp_path / "data"
    d.mkdir()
    _copy(data_dir, d, "sts-train.csv", 24)
    _copy(data_dir, d, "sts-dev.csv", 24)
    header, rows = _rows(data_dir / "sts-dev.csv", n_test)
    label = header.index("similarity")
    for i in range(0, n_test, 3):
        rows[i][label] = ""
    rows[1][label], rows[2][label] = "n/a", "7.5"
    test = _write(d / "sts-test-student.csv", header, rows)
    return d, test, [row[header.index("id")] for row in rows]


# ---- (a) a label column in a test file is ignored ----


@pytest.mark.parametrize("strict", [False, True])
def test_label_column_in_test_file_is_ignored(strict, data_dir, tmp_path, caplog):
    d, test, ids = _sts_data(data_dir, tmp_path)
    # An empty sentence in a test file is kept (and warned about) whether or not the file has a label column.
    lines = test.read_text(encoding="utf-8").split("\n")
    fields = lines[5 - 1].split("\t")
    fields[lines[0].split("\t").index("sentence2")] = ""
    lines[5 - 1] = "\t".join(fields)
    test.write_text("\n".join(lines), encoding="utf-8")
    caplog.set_level(logging.WARNING, logger=BUILDER_LOGGER)
    dsd = load_cs224n("sts", d, strict=strict)  # strict: the labels are not read, so nothing to raise on
    split = dsd["test"]
    assert split["id"] == ids and len(ids) == 40
    assert set(split["label"]) == {None}
    assert split[3]["sentence2"] == ""
    messages = [r.getMessage() for r in caplog.records if r.name == BUILDER_LOGGER]
    assert not any("skipped" in m for m in messages), messages
    assert any(str(test) in m and "line 5: empty 'sentence2'" in m for m in messages), messages
    # train and dev still validate their labels
    assert len(dsd["train"]) == len(dsd["validation"]) == 24


def test_label_column_in_test_file_every_id_predicted(data_dir, tiny_checkpoint, tmp_path):
    d, _, ids = _sts_data(data_dir, tmp_path)
    output_dir = tmp_path / "run"
    extra = [
        "--tasks", "sts", "--do_train", "--max_steps", "1", "--do_predict", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "64", "--save_strategy", "no",
    ]  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a shared machine
    try:
        run_multitask.main(tiny_args(tiny_checkpoint, d, output_dir, *extra))
    finally:
        torch.set_num_threads(threads)
    predictions = read_predictions(output_dir / "predictions" / "sts-test-output.csv")
    assert sorted(predictions) == sorted(ids) and len(ids) == 40


# ---- (b) a repeated id in a dev or test file is an error ----


@pytest.mark.parametrize(
    "name",
    ["ids-sst-dev.csv", "ids-sst-test-student.csv", "sts-dev.csv", "sts-test-student.csv"],
)
@pytest.mark.parametrize("strict", [False, True])
def test_duplicate_id_in_dev_or_test_file_is_an_error(name, strict, data_dir, tmp_path):
    task = "sst" if name.startswith("ids-sst") else "sts"
    d = tmp_path / "data"
    d.mkdir()
    _copy(data_dir, d, f"{TASKS[task].files}-train.csv", 24)
    header, rows = _rows(data_dir / name, 24)
    column = header.index("id")
    first, repeat = 4, 11  # physical lines (header = line 1)
    ident = rows[first - 2][column]
    rows[repeat - 2][column] = ident
    path = _write(d / name, header, rows)
    with pytest.raises(ValueError) as exc:
        load_cs224n(task, d, strict=strict)
    msg = str(exc.value)
    assert str(path) in msg and f"line {repeat}:" in msg and f"line {first}" in msg and ident in msg, msg
    assert re.search(r"duplicate id", msg), msg


def test_duplicate_id_in_hub_validation_split_is_an_error():
    ds = datasets.Dataset.from_dict(
        {"question1": ["a", "b", "c"], "question2": ["x", "y", "z"], "label": [0, 1, 0], "idx": [7, 8, 7]},
        split="validation",
    )
    with pytest.raises(ValueError, match=r"\[validation\]: row 2: duplicate id '7'.*row 0"):
        to_task_columns(ds, "para", TASKS["para"].hub.column_mapping)
    train = datasets.Dataset.from_dict(ds.to_dict(), split="train")  # a train split may repeat an id
    assert to_task_columns(train, "para", TASKS["para"].hub.column_mapping)["id"] == ["7", "8", "7"]


# ---- (c) a repeated id in a train file is still accepted ----


@pytest.mark.parametrize("strict", [False, True])
def test_duplicate_id_in_train_file_is_accepted(strict, data_dir, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    header, rows = _rows(data_dir / "ids-sst-dev.csv", 24)
    column = header.index("id")
    rows[9][column] = rows[2][column]
    _write(d / "ids-sst-train.csv", header, rows)
    train = load_cs224n("sst", d, strict=strict)["train"]
    assert len(train) == 24 and train["id"].count(rows[2][column]) == 2
    # the very same rows as a dev file are refused: the check is for dev and test only
    _write(d / "ids-sst-dev.csv", header, rows)
    with pytest.raises(ValueError, match=r"ids-sst-dev\.csv: line 11: duplicate id"):
        load_cs224n("sst", d, strict=strict)
