# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The task registry: one [`Task`] entry says everything the project knows about a task.

Its name, the kind of head it needs, its text columns, its labels (class names, or a score range), where its data
comes from (CS224N files, a Hub dataset with a column mapping, or any function that returns a `DatasetDict`), its
prediction-file header and a human-readable description. The model's head for the task (see `modeling_bert_pals`)
owns what follows from the kind: the input (one sentence or a pair), the loss, the predictions and the metric.

A task of your own trains next to the paper's tasks once it is registered:

```python
from trainer.tasks import Task, register_task

register_task(Task(name="polarity", kind="classification", text_columns=("sentence",),
                   label_names=("negative", "positive"), description="Movie-review polarity",
                   load=lambda: my_dataset_dict))  # or hub=HubSource("user/dataset", None, {"text": "sentence"})
```
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import datasets

from modeling_bert_pals import BertPalsForMultitask
from modeling_bert_pals.configuration_bert_pals import TASK_KINDS

from .metrics import leaderboard_score


@dataclass(frozen=True)
class HubSource:
    """A Hub dataset (`datasets.load_dataset(dataset_id, config)`) and how its columns map to the task's."""

    dataset_id: str
    config: str | None = None
    column_mapping: Mapping[str, str] = field(default_factory=dict)  # source column -> task column


@dataclass(frozen=True)
class Task:
    r"""
    One task, completely.

    Args:
        name (`str`):
            The name used everywhere: `--tasks`, the model's heads and PALs, metric keys (`eval_{name}_accuracy`).
        kind (`str`):
            The head it needs: "classification" (one sentence), "pair_classification" or "pair_regression" (two).
        text_columns (`tuple[str, ...]`):
            The sentence column(s) of its datasets: one, or two for a pair kind.
        label_names (`tuple[str, ...]`):
            Classification: the class names, in label order (labels are 0 .. n-1).
        label_range (`tuple[float, float]`, *optional*):
            Regression: the lowest and highest score (the heads score in [0, highest]).
        description (`str`):
            Human-readable name, for logs and the model card ("SST-5 sentiment").
        pipeline_tag (`str`):
            The model-index task type of the model card.
        prediction_header (`str`):
            Column name of the prediction files (the CS224N grader's, for the course tasks).
        files (`str`, *optional*):
            CS224N-format files in `--data_dir`: `{files}-train.csv`, `{files}-dev.csv`, `{files}-test-student.csv`.
        label_column (`str`):
            The label's column in those files.
        hub (`HubSource`, *optional*):
            A Hub dataset that holds the task (used with `--hub_datasets {name}`, or when there are no files).
        load (`Callable[[], datasets.DatasetDict]`, *optional*):
            Any other source: returns splits "train", "validation" and optionally "test", with `id` (optional), the
            text columns and `label` (rows are checked as for a Hub dataset).
        seen_in_pretraining_by (`tuple[str, ...]`):
            Base models whose pre-training data include this task's: the model card says so beside its result.
        short_name (`str`, *optional*):
            Its name in a table's column ("SST accuracy"); the name in capitals when not given.
    """

    name: str
    kind: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] = ()
    label_range: tuple[float, float] | None = None
    description: str = ""
    pipeline_tag: str = "text-classification"
    prediction_header: str = "Predicted_Label"
    files: str | None = None
    label_column: str = "label"
    hub: HubSource | None = None
    load: Callable[[], datasets.DatasetDict] | None = None
    seen_in_pretraining_by: tuple[str, ...] = ()
    short_name: str | None = None

    def __post_init__(self):
        if self.short_name is None:
            object.__setattr__(self, "short_name", self.name.upper())
        if not self.name.isidentifier():
            raise ValueError(f"Task name {self.name!r}: use letters, digits and underscores (it names modules).")
        if self.kind not in TASK_KINDS:
            raise ValueError(f"Task {self.name!r}: kind {self.kind!r} is not one of {TASK_KINDS}.")
        if len(self.text_columns) != self.num_texts:
            raise ValueError(f"Task {self.name!r}: a {self.kind} task has {self.num_texts} text column(s).")
        if self.is_regression != (self.label_range is not None) or (not self.is_regression and not self.label_names):
            raise ValueError(
                f"Task {self.name!r}: a {self.kind} task needs "
                f"{'label_range=(low, high)' if self.is_regression else 'label_names'} (and not the other)."
            )

    @property
    def num_texts(self) -> int:
        return 1 if self.kind == "classification" else 2

    @property
    def is_regression(self) -> bool:
        return self.kind == "pair_regression"

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def metric(self) -> str:
        """The metric of the head this task gets: "accuracy" or "pearson"."""
        return BertPalsForMultitask.head_class(self.head_spec()).metric

    def head_spec(self) -> dict:
        """The task's entry in the model config (`BertPalsConfig.tasks`): what its head's weights need."""
        spec = {"kind": self.kind, "num_labels": self.num_labels}
        if self.is_regression:
            spec["max_score"] = float(self.label_range[1])
        else:
            spec["label_names"] = list(self.label_names)  # what the pipeline and the demo call the classes
        return spec

    def features(self) -> datasets.Features:
        """The columns every source of this task is brought to: `id`, the text columns, `label`."""
        label = datasets.Value("float32") if self.is_regression else datasets.ClassLabel(names=list(self.label_names))
        return datasets.Features(
            {
                "id": datasets.Value("string"),
                **{c: datasets.Value("string") for c in self.text_columns},
                "label": label,
            }
        )

    def parse_label(self, value) -> tuple[float | int | None, str | None]:
        """
        `(label, None)`, or `(None, reason)` when `value` (from a file or a dataset) is empty, unparsable or out of
        range. Class labels may be written as floats ("1.0") but must be whole numbers.
        """
        if value is None or (isinstance(value, str) and not value.strip()):
            return None, f"empty label ({self.label_column!r})"
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            return None, f"unparsable label {value!r}"
        if not math.isfinite(number):
            return None, f"unparsable label {value!r} (not finite)"
        if self.is_regression:
            low, high = self.label_range
            if not low <= number <= high:
                return None, f"label {value!r} out of range (expected {low:g}..{high:g})"
            return number, None
        if not number.is_integer() or not 0 <= number < self.num_labels:
            return None, f"label {value!r} out of range (expected an integer in 0..{self.num_labels - 1})"
        return int(number), None


TASKS: dict[str, Task] = {}


def register_task(task: Task, overwrite: bool = False) -> Task:
    """Adds `task` to the registry, so that `--tasks`, the data loading, predictions and model cards know it."""
    if task.name in TASKS and not overwrite and TASKS[task.name] != task:
        raise ValueError(f"A task named {task.name!r} is registered already; pass overwrite=True to replace it.")
    TASKS[task.name] = task
    return task


def unregister_task(name: str) -> None:
    TASKS.pop(name, None)


def get_task(name: str) -> Task:
    """The registered task `name`; a `ValueError` listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown task {name!r}; known tasks: {sorted(TASKS)}.") from None


# The plain mean of the tasks' metrics, which evaluation adds (`eval_overall`): the paper's "overall".
OVERALL = "overall"


def metric_key(task: str, prefix: str = "eval") -> str:
    """The key evaluation reports a task's metric under, `eval_<task>_<metric>`; `eval_overall` for `OVERALL`."""
    return f"{prefix}_{OVERALL}" if task == OVERALL else f"{prefix}_{task}_{get_task(task).metric}"


LEADERBOARD = "leaderboard"


def leaderboard_of_scores(scores: dict[str, float]) -> float:
    """The leaderboard score (`trainer.metrics.leaderboard_score`) of `{task: its metric's value}`."""
    return leaderboard_score([(get_task(task).metric, value) for task, value in scores.items()])


def leaderboard_of(metrics: dict[str, float], tasks, prefix: str = "eval") -> float:
    """The leaderboard score of evaluation `metrics` (keyed `eval_<task>_<metric>`) on `tasks`."""
    return leaderboard_of_scores({task: metrics[metric_key(task, prefix)] for task in tasks})


def metric_keys(tasks, prefix: str = "eval") -> dict[str, str]:
    """`{task: metric_key(task), ..., OVERALL: "eval_overall"}`, in the order of `tasks`."""
    return {task: metric_key(task, prefix) for task in (*tasks, OVERALL)}


def fill_label_names(config):
    """
    Gives the classification tasks of a model `config` that was saved without class names (before they were
    recorded) the names of the registered task of that name, kind and number of labels; the others keep
    `BertPalsConfig.label_names`' fallback, `LABEL_{i}`. Returns the config, changed in place.
    """
    for name, spec in config.tasks.items():
        task = TASKS.get(name)
        if spec.get("label_names") or task is None or task.is_regression:
            continue
        if (task.kind, task.num_labels) == (spec["kind"], spec.get("num_labels", 1)):
            spec["label_names"] = list(task.label_names)
    return config


# The CS224N default project's tasks. The prediction headers are the course grader's, typo included.
register_task(
    Task(
        name="sst",
        kind="classification",
        text_columns=("sentence",),
        label_names=("very negative", "negative", "neutral", "positive", "very positive"),
        description="SST-5 sentiment",
        short_name="SST",
        prediction_header="Predicted_Sentiment",
        files="ids-sst",
        label_column="sentiment",
        hub=HubSource("SetFit/sst5", None, {"text": "sentence", "label": "label"}),
    )
)
register_task(
    Task(
        name="para",
        kind="pair_classification",
        text_columns=("sentence1", "sentence2"),
        label_names=("not_duplicate", "duplicate"),
        description="Quora paraphrase",
        short_name="Quora",
        prediction_header="Predicted_Is_Paraphrase",
        files="quora",
        label_column="is_duplicate",
        hub=HubSource(
            "nyu-mll/glue", "qqp", {"question1": "sentence1", "question2": "sentence2", "label": "label", "idx": "id"}
        ),
        # Its training pairs include Quora duplicate questions (the model's card on the Hub).
        seen_in_pretraining_by=("sentence-transformers/all-MiniLM-L6-v2",),
    )
)
register_task(
    Task(
        name="sts",
        kind="pair_regression",
        text_columns=("sentence1", "sentence2"),
        label_range=(0.0, 5.0),
        description="STS similarity",
        short_name="STS",
        pipeline_tag="sentence-similarity",
        prediction_header="Predicted_Similiarity",
        files="sts",
        label_column="similarity",
        # glue/stsb keeps the CS224N file's 0-5 scale (sentence-transformers/stsb rescales to 0-1).
        hub=HubSource(
            "nyu-mll/glue", "stsb", {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label", "idx": "id"}
        ),
    )
)
register_task(
    Task(
        name="cfimdb",
        kind="classification",
        text_columns=("sentence",),
        label_names=("negative", "positive"),
        description="CFIMDB sentiment",
        prediction_header="Predicted_Sentiment",
        files="ids-cfimdb",
        label_column="sentiment",
    )
)

# The seed paper's three tasks, trained when `--tasks` is not given.
PAPER_TASKS = ("sst", "para", "sts")
