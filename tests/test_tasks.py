# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""The task registry: a user's own task and CFIMDB train next to the paper's tasks with no code of their own, and no
module outside the registry and the model's heads names a task or a task kind."""

import ast
import json
from pathlib import Path

import datasets
import pytest
from conftest import REPO, SHORT_RUN, tiny_args

import run_multitask
from trainer.predictions import read_predictions
from trainer.tasks import OVERALL, TASKS, Task, get_task, metric_key, register_task, unregister_task


WORDS = {0: ["dull", "boring", "awful", "bad"], 1: ["great", "moving", "superb", "good"]}


def polarity_splits() -> datasets.DatasetDict:
    """A small in-memory dataset in its own columns: `text` and `polarity`, no ids."""

    def split(size, offset):
        rows = [(f"a {WORDS[i % 2][(i // 2) % 4]} film number {i + offset}", i % 2) for i in range(size)]
        return datasets.Dataset.from_dict({"text": [t for t, _ in rows], "polarity": [p for _, p in rows]})

    return datasets.DatasetDict(train=split(40, 0), validation=split(12, 100), test=split(8, 200))


@pytest.fixture
def polarity_task():
    task = register_task(
        Task(
            name="polarity",
            kind="classification",
            text_columns=("sentence",),
            label_names=("negative", "positive"),
            description="Toy polarity",
            prediction_header="Predicted_Polarity",
            # Any source: a function returning splits, its columns renamed to the task's.
            load=lambda: polarity_splits().rename_columns({"text": "sentence", "polarity": "label"}),
        )
    )
    yield task
    unregister_task(task.name)


@pytest.mark.slow
def test_a_registered_task_trains_next_to_the_paper_tasks(polarity_task, tiny_checkpoint, data_dir, tmp_path):
    run_multitask.main(
        tiny_args(tiny_checkpoint, data_dir, tmp_path, *SHORT_RUN, "--tasks", "sst", "para", "sts", "polarity")
    )
    results = json.loads((tmp_path / "all_results.json").read_text())
    assert {"eval_polarity_accuracy", "eval_sst_accuracy", "eval_overall"} <= set(results)
    for split, size in (("dev", 12), ("test", 8)):
        path = tmp_path / "predictions" / f"polarity-{split}-output.csv"
        assert path.read_text().splitlines()[0] == "id \t Predicted_Polarity "
        assert sorted(read_predictions(path)) == sorted(str(i) for i in range(size))  # row indices as ids
    assert "Toy polarity" in (tmp_path / "README.md").read_text()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["tasks"]["polarity"] == {
        "kind": "classification",
        "num_labels": 2,
        "label_names": ["negative", "positive"],
    }


@pytest.mark.slow
def test_cfimdb_is_a_fourth_task(tiny_checkpoint, data_dir, tmp_path):
    run_multitask.main(
        tiny_args(
            tiny_checkpoint,
            data_dir,
            tmp_path,
            *SHORT_RUN,
            "--tasks",
            "sst",
            "para",
            "sts",
            "cfimdb",
            "--max_eval_samples",
            "64",
        )
    )
    results = json.loads((tmp_path / "all_results.json").read_text())
    assert {"eval_cfimdb_accuracy", "eval_sst_accuracy", "eval_para_accuracy", "eval_sts_pearson"} <= set(results)
    predictions = {path.name for path in (tmp_path / "predictions").iterdir() if path.name.startswith("cfimdb")}
    assert predictions == {"cfimdb-dev-output.csv", "cfimdb-test-output.csv"}
    assert "CFIMDB sentiment" in (tmp_path / "README.md").read_text()


def test_task_entries_are_checked():
    with pytest.raises(ValueError, match="kind 'ranking'"):
        Task(name="x", kind="ranking", text_columns=("sentence",), label_names=("a", "b"))
    with pytest.raises(ValueError, match="2 text column"):
        Task(name="x", kind="pair_classification", text_columns=("sentence",), label_names=("a", "b"))
    with pytest.raises(ValueError, match="label_range"):
        Task(name="x", kind="pair_regression", text_columns=("a", "b"), label_names=("a", "b"))
    with pytest.raises(ValueError, match="registered already"):
        register_task(Task(name="sst", kind="classification", text_columns=("sentence",), label_names=("a", "b")))
    with pytest.raises(ValueError, match="Unknown task 'qnli'"):
        get_task("qnli")
    sts = get_task("sts")
    assert sts.head_spec() == {"kind": "pair_regression", "num_labels": 1, "max_score": 5.0}
    assert (sts.metric, get_task("para").metric) == ("pearson", "accuracy")
    assert sts.parse_label("5.5") == (None, "label '5.5' out of range (expected 0..5)")


TASK_WORDS = set(TASKS) | {"classification", "pair_classification", "pair_regression"}


def names_of_tasks_or_kinds(path: Path, words=TASK_WORDS) -> list[str]:
    """`file:line: 'sst'` for every string constant in the code (docstrings aside) that is a task name or kind."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in words and id(node) not in docstrings
    ]


def test_only_the_registry_and_the_heads_know_tasks_and_kinds():
    modules = [REPO / "run_multitask.py", REPO / "plot_multitask.py"]
    for folder in ("trainer", "experiments", "benchmarks"):  # the experiments and benchmarks read the registry too
        modules += sorted((REPO / folder).rglob("*.py"))
    found = [hit for path in modules if path.name != "tasks.py" for hit in names_of_tasks_or_kinds(path)]
    assert found == []


def test_the_experiments_and_benchmarks_take_metric_keys_from_the_registry():
    metric_words = {metric_key(task) for task in TASKS} | {metric_key(OVERALL)}  # eval_sst_accuracy, eval_overall
    modules = [*sorted((REPO / "experiments").rglob("*.py")), *sorted((REPO / "benchmarks").rglob("*.py"))]
    assert [hit for path in modules for hit in names_of_tasks_or_kinds(path, metric_words)] == []
