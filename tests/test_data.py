# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Tests of trainer.cs224n_builder (real CS224N files + injected faults), trainer.hub_tasks, and the tokenised splits
of many tasks (trainer.tokenization.tokenize_split)."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import contextlib
import logging
import re
import shutil

import datasets
import pytest

from trainer.cs224n_builder import Cs224nBuilder, Cs224nConfig, load_cs224n, normalize_sentence
from trainer.hub_tasks import to_task_columns
from trainer.tasks import TASKS
from trainer.tokenization import tokenize_split, tokenize_task


# The real data directory comes from the `data_dir` fixture of tests/conftest.py:
# $BERT_PALS_DATA_DIR, else <repo>/../shared/data (fails if absent).
BUILDER_LOGGER = "trainer.cs224n_builder"
HUB_LOGGER = "trainer.hub_tasks"

# Row counts of the data README; quora-train.csv line 9929 (empty sentence2 and empty label) is skipped.
EXPECTED_ROWS = {
    "sst": {"train": 8029, "validation": 1101, "test": 2210},
    "para": {"train": 14169 - 1, "validation": 3823},
    "sts": {"train": 5491, "validation": 863, "test": 1725},
    "cfimdb": {"train": 1707, "validation": 245, "test": 488},
}

datasets.disable_progress_bars()


def _warnings(caplog, logger=BUILDER_LOGGER):
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize("task", sorted(EXPECTED_ROWS))
def test_real_data_row_counts_and_schema(task, data_dir, caplog):
    caplog.set_level(logging.WARNING, logger=BUILDER_LOGGER)
    dsd = load_cs224n(task, str(data_dir))
    assert isinstance(dsd, datasets.DatasetDict)
    assert {split: len(ds) for split, ds in dsd.items()} == EXPECTED_ROWS[task]
    for ds in dsd.values():
        assert ds.features == TASKS[task].features()
        assert ds.column_names == ["id", *TASKS[task].text_columns, "label"]
    warnings = _warnings(caplog)
    if task == "para":
        assert len(warnings) == 1
        msg = warnings[0]
        assert "quora-train.csv" in msg and "skipped 1 bad row(s) of 14169" in msg
        assert "line 9929" in msg and "empty label" in msg
    else:
        assert warnings == []


def test_real_data_labels(data_dir):
    sst = load_cs224n("sst", data_dir)
    assert set(sst["train"]["label"]) == {0, 1, 2, 3, 4}
    assert sst["train"].features["label"].names[0] == "very negative"
    para = load_cs224n("para", data_dir)
    assert set(para["validation"]["label"]) == {0, 1}
    assert "test" not in para  # there is no quora-test-student.csv: no split, no error
    sts = load_cs224n("sts", data_dir)
    labels = sts["train"]["label"]
    assert min(labels) == 0.0 and max(labels) == 5.0
    assert sts["train"].features["label"].dtype == "float32"


@pytest.mark.parametrize("task", ["sst", "sts"])
def test_real_test_split_unlabeled_unique_ids(task, data_dir):
    test = load_cs224n(task, data_dir)["test"]
    assert len(test) == EXPECTED_ROWS[task]["test"]
    assert set(test["label"]) == {None}
    ids = test["id"]
    assert len(set(ids)) == len(ids) and all(ids)


def test_normalisation_on_off(data_dir):
    raw = "The Rock is destined to be the 21st Century 's new `` Conan '' and that he 's going to make"
    on = load_cs224n("sst", data_dir)["train"][0]
    off = load_cs224n("sst", data_dir, normalize=False)["train"][0]
    assert on["id"] == off["id"] == "32a4f146782cbde1b7fa65799"
    assert off["sentence"].startswith(raw)  # as in the file, stripped of the leading space
    assert on["sentence"] == normalize_sentence(off["sentence"])
    assert on["sentence"].startswith("the rock is destined to be the 21st century 's new `` conan ' ' and")
    para_on = load_cs224n("para", data_dir)["train"][0]
    assert para_on["sentence1"] == "what can you get as a customer of star alliance ?"


def test_normalize_sentence_matches_course():
    s = "  Hello, World. Isn't it?It's  "
    assert normalize_sentence(s) == "hello , world . isn 't it ?it 's"


# --------------------------------------------------------------------------- faults in a copy


def _copy(data_dir, tmp_path, name="ids-sst-dev.csv", as_name="ids-sst-train.csv"):
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    shutil.copyfile(data_dir / name, d / as_name)
    (d / as_name).chmod(0o644)
    return d, d / as_name


def _edit(path, line_no, edit):
    """Apply edit(fields) -> fields | str to physical line ``line_no`` (1-based) of a TSV file."""
    lines = path.read_text(encoding="utf-8").split("\n")
    fields = lines[line_no - 1].split("\t")
    new = edit(fields)
    lines[line_no - 1] = new if isinstance(new, str) else "\t".join(new)
    path.write_text("\n".join(lines), encoding="utf-8")


def _set(index, value):
    def edit(fields):
        fields[index] = value
        return fields

    return edit


# SST columns: "", id, sentence, sentiment
SST_FAULTS = {
    3: (_set(3, ""), "empty label"),
    5: (_set(3, "abc"), "unparsable label 'abc'"),
    7: (_set(3, "7"), "out of range"),
    9: (_set(2, "   "), "empty 'sentence'"),
    11: (lambda f: f[:3], "expected 4 fields, found 3"),
    13: (_set(1, ""), "empty id"),
}


def test_faults_skipped_and_counted(data_dir, tmp_path, caplog):
    d, path = _copy(data_dir, tmp_path)
    for line, (edit, _) in SST_FAULTS.items():
        _edit(path, line, edit)
    caplog.set_level(logging.WARNING, logger=BUILDER_LOGGER)
    dsd = load_cs224n("sst", d)
    assert len(dsd["train"]) == 1101 - len(SST_FAULTS)
    assert list(dsd) == ["train"]
    warnings = _warnings(caplog)
    assert len(warnings) == 1  # one warning per file
    msg = warnings[0]
    assert str(path) in msg and f"skipped {len(SST_FAULTS)} bad row(s) of 1101" in msg
    for line, (_, reason) in list(SST_FAULTS.items())[:5]:  # the first 5 are listed
        assert f"line {line}: " in msg and reason in msg
    assert "1 more" in msg


@pytest.mark.parametrize("line", sorted(SST_FAULTS))
def test_fault_strict_raises_with_file_and_line(line, data_dir, tmp_path):
    d, path = _copy(data_dir, tmp_path)
    edit, reason = SST_FAULTS[line]
    _edit(path, line, edit)
    with pytest.raises(ValueError) as exc:
        load_cs224n("sst", d, strict=True)
    msg = str(exc.value)
    assert str(path) in msg and f"line {line}: " in msg and reason in msg


@pytest.mark.parametrize(
    "task, name, as_name, field, value, reason",
    [
        ("para", "quora-dev.csv", "quora-train.csv", 4, "0.5", "out of range"),
        ("para", "quora-dev.csv", "quora-train.csv", 4, "2.0", "out of range"),
        ("sts", "sts-dev.csv", "sts-train.csv", 4, "5.5", "out of range"),
        ("sts", "sts-dev.csv", "sts-train.csv", 4, "nan", "unparsable"),
        ("cfimdb", "ids-cfimdb-dev.csv", "ids-cfimdb-train.csv", 3, "2", "out of range"),
    ],
)
def test_label_range_per_task(task, name, as_name, field, value, reason, data_dir, tmp_path, caplog):
    d, path = _copy(data_dir, tmp_path, name, as_name)
    _edit(path, 4, _set(field, value))
    caplog.set_level(logging.WARNING, logger=BUILDER_LOGGER)
    n = len(load_cs224n(task, d)["train"])
    assert n == len(path.read_text(encoding="utf-8").splitlines()) - 2  # minus header and the bad row
    (msg,) = _warnings(caplog)
    assert as_name in msg and "line 4: " in msg and reason in msg
    with pytest.raises(ValueError, match=rf"{as_name}: line 4: .*{reason}"):
        load_cs224n(task, d, strict=True)


def test_float_class_labels_accepted(data_dir, tmp_path):
    d, path = _copy(data_dir, tmp_path)
    _edit(path, 2, _set(3, "3.0"))
    assert load_cs224n("sst", d, strict=True)["train"][0]["label"] == 3


def test_line_numbers_after_multiline_record(data_dir, tmp_path):
    d, path = _copy(data_dir, tmp_path)
    _edit(path, 2, lambda f: [f[0], f[1], '"a quoted\nmulti-line sentence"', f[3]])  # now lines 2-3
    _edit(path, 6, _set(3, "abc"))  # physical line 6 = data row 5
    ds = load_cs224n("sst", d)["train"]
    assert ds[0]["sentence"] == "a quoted multi-line sentence"
    with pytest.raises(ValueError, match=r"ids-sst-train\.csv: line 6: unparsable label 'abc'"):
        load_cs224n("sst", d, strict=True)


def test_missing_label_column_in_train_is_an_error(data_dir, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    shutil.copyfile(data_dir / "ids-sst-test-student.csv", d / "ids-sst-train.csv")
    with pytest.raises(
        ValueError, match=r"ids-sst-train\.csv: line 1 \(header\): missing column\(s\) \['sentiment'\]"
    ):
        load_cs224n("sst", d)


def test_missing_paths_and_unknown_task(tmp_path, data_dir):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_cs224n("sst", missing)
    with pytest.raises(FileNotFoundError, match=r"ids-sst-train\.csv"):
        load_cs224n("sst", tmp_path)
    with pytest.raises(ValueError, match=r"known tasks: \['cfimdb', 'para', 'sst', 'sts'\]"):
        load_cs224n("qqp", data_dir)


# --------------------------------------------------------------------------- caching


def test_cached_load_still_warns_and_tracks_options_and_contents(data_dir, tmp_path, caplog):
    d, path = _copy(data_dir, tmp_path)
    _edit(path, 3, _set(3, ""))
    cache = tmp_path / "cache"
    caplog.set_level(logging.WARNING, logger=BUILDER_LOGGER)

    first = load_cs224n("sst", d, cache_dir=cache)
    (msg1,) = _warnings(caplog)
    caplog.clear()
    second = load_cs224n("sst", d, cache_dir=cache)  # cache hit
    (msg2,) = _warnings(caplog)
    assert len(first["train"]) == len(second["train"]) == 1100
    assert str(path) in msg2 and "skipped 1 bad row(s)" in msg2 and "line 3: empty label" in msg2
    assert "recorded when the cache" in msg2 and "recorded" not in msg1
    assert second["train"].cache_files  # really served from the cache (memory-mapped Arrow)

    # normalize / strict variants do not mix with the cached default
    raw = load_cs224n("sst", d, normalize=False, cache_dir=cache)
    assert raw["train"][0]["sentence"] != second["train"][0]["sentence"]
    with pytest.raises(ValueError, match="line 3"):
        load_cs224n("sst", d, strict=True, cache_dir=cache)

    # edited file: no stale data
    caplog.clear()
    _edit(path, 5, _set(3, "abc"))
    third = load_cs224n("sst", d, cache_dir=cache)
    assert len(third["train"]) == 1099
    (msg3,) = _warnings(caplog)
    assert "skipped 2 bad row(s)" in msg3 and "recorded" not in msg3


def test_builder_direct_usage(data_dir, tmp_path):
    builder = Cs224nBuilder(config_name="sts", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))
    assert isinstance(builder.config, Cs224nConfig)
    assert builder.config.normalize is True and builder.config.strict is False
    builder.download_and_prepare()
    dsd = builder.as_dataset()
    assert {k: len(v) for k, v in dsd.items()} == EXPECTED_ROWS["sts"]
    assert builder.skipped_rows == {"train": [], "validation": [], "test": []}
    again = Cs224nBuilder(config_name="sts", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))
    again.download_and_prepare()  # cache hit: the record is read back
    assert again.skipped_rows == builder.skipped_rows

    para = Cs224nBuilder(config_name="para", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))
    para.download_and_prepare()
    assert para.skipped_rows["train"] == [(9929, "empty 'sentence2'; empty label ('is_duplicate')")]


# --------------------------------------------------------------------------- hub mapping


def test_hub_mapping_sst_renames_and_creates_ids():
    ds = datasets.Dataset.from_dict(
        {"text": [" A fine film. ", "Bad."], "label": [4, 0], "label_text": ["very positive", "very negative"]}
    )
    out = to_task_columns(ds, "sst", TASKS["sst"].hub.column_mapping)
    assert out.features == TASKS["sst"].features()
    assert out.column_names == ["id", "sentence", "label"]
    assert out["id"] == ["0", "1"]
    assert out["sentence"] == ["A fine film.", "Bad."]
    assert out["label"] == [4, 0]
    norm = to_task_columns(ds, "sst", {"text": "sentence"}, normalize=True)
    assert norm["sentence"] == ["a fine film .", "bad ."]


def test_hub_mapping_para_and_sts_cast_labels():
    qqp = datasets.Dataset.from_dict(
        {"question1": ["q1", "q2"], "question2": ["p1", "p2"], "label": [1, 0], "idx": [10, 11]}
    )
    out = to_task_columns(qqp, "para", TASKS["para"].hub.column_mapping)
    assert out["id"] == ["10", "11"] and out["label"] == [1, 0]
    assert out.features == TASKS["para"].features()

    stsb = datasets.Dataset.from_dict(
        {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [4, 2.5], "idx": [0, 1]}
    )
    out = to_task_columns(stsb, "sts", TASKS["sts"].hub.column_mapping)
    assert out.features["label"] == datasets.Value("float32") and out["label"] == [4.0, 2.5]


def test_hub_unlabeled_split_gets_none():
    test = datasets.Dataset.from_dict({"question1": ["q"], "question2": ["p"], "label": [-1], "idx": [3]})
    out = to_task_columns(test, "para", TASKS["para"].hub.column_mapping)
    assert out["label"] == [None]


def test_hub_missing_columns_error():
    ds = datasets.Dataset.from_dict({"question1": ["q"], "label": [1]})
    with pytest.raises(ValueError) as exc:
        to_task_columns(ds, "para", {"question1": "sentence1"})
    msg = str(exc.value)
    assert "['sentence2']" in msg and "['question1', 'label']" in msg
    with pytest.raises(ValueError, match="not task columns"):
        to_task_columns(ds, "para", {"question1": "question"})
    with pytest.raises(ValueError, match="known tasks"):
        to_task_columns(ds, "nli")


def test_hub_out_of_range_labels_skip_warn_or_raise(caplog):
    ds = datasets.Dataset.from_dict({"text": ["ok", "too high", "fine", ""], "label": [1, 5, 2, 3]}, split="train")
    caplog.set_level(logging.WARNING, logger=HUB_LOGGER)
    out = to_task_columns(ds, "sst", {"text": "sentence"})
    assert out["sentence"] == ["ok", "fine"] and out["id"] == ["0", "2"]
    (msg,) = _warnings(caplog, HUB_LOGGER)
    assert "skipped 2 bad row(s) of 4" in msg and "row 1: label 5 out of range" in msg and "row 3: empty" in msg
    with pytest.raises(ValueError, match=r"\[train\]: row 1: label 5 out of range"):
        to_task_columns(ds, "sst", {"text": "sentence"}, strict=True)
    para = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [0.5]})
    with pytest.raises(ValueError, match="out of range"):
        to_task_columns(para, "para", strict=True)


# --------------------------------------------------------------------------- tokenised splits


def test_tokenize_split_takes_each_task_with_the_split_its_rows_and_its_encoding(data_dir, minilm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    raw = {task: load_cs224n(task, data_dir) for task in ("sts", "sst", "para")}  # not the registry's order
    encodings = {"sts": "separate", "sst": "single", "para": "cross"}
    calls = []

    def main_process_first(desc):
        calls.append(desc)
        return contextlib.nullcontext()

    test = tokenize_split(raw, "test", tokenizer, encodings, limit=3, main_process_first=main_process_first)
    assert list(test) == ["sts", "sst"]  # Quora has no test split here; the order is raw's
    assert calls == ["tokenizing sts test", "tokenizing sst test"]
    assert [len(dataset) for dataset in test.values()] == [3, 3]
    assert test["sts"][:] == tokenize_task(raw["sts"]["test"].select(range(3)), tokenizer, "sts", "separate")[:]
    dev = tokenize_split(raw, "validation", tokenizer, encodings, max_seq_length=16, limit=10**6)
    assert len(dev["para"]) == EXPECTED_ROWS["para"]["validation"]  # a limit above the rows keeps them all
    assert "input_ids_b" not in dev["para"].column_names and max(map(len, dev["para"]["input_ids"])) == 16
