# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""BERT with Projected Attention Layers (PALs) for multi-task learning: configuration."""

from dataclasses import dataclass
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import BertConfig


TASK_KINDS = ("classification", "pair_classification", "pair_regression")


@dataclass(frozen=True)
class HeadOption:
    """
    One option of a task's head: a key of the task's entry in `BertPalsConfig.tasks`, described once for everything
    that reads it (`check_task`, the heads, the command line, the reuse check of a saved model, the model card).

    Args:
        name (`str`):
            The key in the task entry.
        values (`dict[str, tuple]`):
            The values of each task kind that takes the option, its default first. A number option gives only its
            default; `minimum` and `maximum` bound it. A kind without an entry takes no such option.
        changes_weights (`bool`):
            Whether the option changes which parameters the head has: a saved model keeps its own value.
        flag (`str`):
            The command-line argument of `run_multitask.py` that sets it (`--flag value` or `--flag task=value`).
        help (`str`):
            What the values mean.
    """

    name: str
    values: dict[str, tuple]
    changes_weights: bool
    flag: str
    help: str
    minimum: float | None = None
    maximum: float | None = None  # exclusive

    @property
    def is_number(self) -> bool:
        return self.minimum is not None

    def default(self, kind: str):
        return self.values[kind][0] if kind in self.values else None

    def problem(self, kind: str, value) -> str | None:
        """Why `value` is not a value of this option for a task of `kind`, or None when it is."""
        if kind not in self.values:
            return f"a {kind} task takes no `{self.name}`"
        if not self.is_number:
            allowed = self.values[kind]
            return None if value in allowed else f"{self.name} {value!r} is not one of {allowed}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{self.name} must be a number; got {value!r}"
        if not (self.minimum <= value and (self.maximum is None or value < self.maximum)):
            upper = "inf" if self.maximum is None else f"{self.maximum:g}"
            return f"{self.name} {value!r} is outside [{self.minimum:g}, {upper})"
        return None


PAIR_KINDS = ("pair_classification", "pair_regression")
CLASSIFICATION_KINDS = ("classification", "pair_classification")
HEAD_OPTIONS = {
    option.name: option
    for option in (
        HeadOption(
            "encoding",
            {"classification": ("single",), **dict.fromkeys(PAIR_KINDS, ("separate", "cross"))},
            changes_weights=True,
            flag="pair_encoding",
            help="How a pair is read: 'separate' (each sentence encoded alone, as in the paper) or 'cross' (one "
            "sequence [CLS] a [SEP] b [SEP]); a single sentence is 'single'.",
        ),
        HeadOption(
            "features",
            dict.fromkeys(PAIR_KINDS, ("concat", "sbert")),
            changes_weights=True,
            flag="pair_features",
            help="Features of a separately encoded pair's linear head: 'concat' ([u, v], the paper's) or 'sbert' "
            "([u, v, |u-v|, u*v]).",
        ),
        HeadOption(
            "head",
            {"pair_regression": ("cosine", "linear")},
            changes_weights=True,
            flag="sts_head",
            help="Head of a separately encoded pair-regression task: 'cosine' (the paper's improvement: ReLU(cos(u, "
            "v)) x 5) or 'linear' (its baseline: the pair's features -> dropout -> linear -> sigmoid x 5). A task "
            "entry without it takes the config's `sts_head`.",
        ),
        HeadOption(
            "loss",
            {
                "classification": ("cross_entropy",),
                "pair_classification": ("cross_entropy", "cross_entropy+ranking"),
                "pair_regression": ("mse", "cosent"),
            },
            changes_weights=False,
            flag="loss",
            help="'cross_entropy', 'cross_entropy+ranking' (binary pair tasks encoded separately: adds "
            "multiple-negatives ranking over the batch's positive pairs), 'mse' or 'cosent' (regression).",
        ),
        HeadOption(
            "label_smoothing",
            dict.fromkeys(CLASSIFICATION_KINDS, (0.0,)),
            changes_weights=False,
            flag="label_smoothing",
            help="Label smoothing of a classification task's cross-entropy, in [0, 1).",
            minimum=0.0,
            maximum=1.0,
        ),
        HeadOption(
            "rdrop",
            dict.fromkeys(TASK_KINDS, (0.0,)),
            changes_weights=False,
            flag="rdrop",
            help="R-Drop (Liang et al. 2021) weight alpha >= 0: in training the batch runs twice (two dropout masks) "
            "and the loss adds alpha x the divergence of the two outputs (symmetric KL, or the squared difference of "
            "two scores); 0 turns it off.",
            minimum=0.0,
        ),
    )
}
# Values that configs written before `HEAD_OPTIONS` may carry for a single sentence, which mean the default.
LEGACY_OPTION_VALUES = {("classification", "encoding"): "separate", ("classification", "features"): "concat"}
# Keys of a task entry that name its outputs for people (class names): they neither shape the weights nor identify a
# training run, and configs saved before them lack them.
DESCRIPTIVE_TASK_KEYS = ("label_names",)
STS_HEADS = HEAD_OPTIONS["head"].values["pair_regression"]  # the config-wide default takes the same heads
POOLINGS = ("pooler", "mean")
PAL_DECODER_INITS = ("zeros", "normal")

# The seed paper's three tasks: SST-5 sentiment, Quora paraphrase, STS similarity (a score in [0, 5]).
DEFAULT_TASKS = {
    "sst": {"kind": "classification", "num_labels": 5},
    "para": {"kind": "pair_classification", "num_labels": 2},
    "sts": {"kind": "pair_regression", "num_labels": 1},
}


@strict
class BertPalsConfig(BertConfig):
    r"""
    Configuration of [`BertPalsForMultitask`]: a BERT encoder shared by several tasks, with one Projected Attention
    Layer (PAL, Stickland & Murray 2019) per task in every layer and one head per task. All [`BertConfig`] arguments
    are accepted; the PAL and task arguments are:

    pal_size (`int`, defaults to 204):
        Width of the projected space the PAL attends in (the V^E / V^D projections map hidden_size <-> pal_size).
    pal_num_heads (`int`, defaults to 6):
        Attention heads of the PAL self-attention (6 heads of 34 as in the original code).
    use_pals (`bool`, defaults to `True`):
        Without PALs the encoder is exactly BERT.
    tasks (`dict`, *optional*):
        `{name: {"kind": ..., "num_labels": ..., ...}}` with kind one of "classification" (one sentence),
        "pair_classification" and "pair_regression" (two sentences, a score in [0, `max_score`], 5 by default).
        Defaults to the paper's `sst` (5 classes), `para` (2 classes) and `sts` (regression). Optional head options
        of a pair task: `encoding` ("separate": each sentence encoded alone, as in the paper; "cross": the pair as
        one sequence `[CLS] a [SEP] b [SEP]`), `features` of a separate pair's linear head ("concat": `[u, v]`, the
        paper's; "sbert": `[u, v, |u - v|, u * v]`), and of every task `loss`: "cross_entropy" (classification),
        "cross_entropy+ranking" (binary pair classification, separate encoding: plus a multiple-negatives ranking
        loss over the batch's positive pairs), "mse" or "cosent" (regression). What the outputs mean: `label_names`
        of a classification kind, the `num_labels` class names in label order (what the pipeline returns), and
        `max_score` of a regression task (its scores lie in [0, `max_score`]). A config saved without `label_names`
        still loads; its classes are then named by the task registry where it knows the task, else `LABEL_{i}`.
    sts_head (`str`, defaults to `"cosine"`):
        Head of the pair-regression tasks whose entry in `tasks` has no `head` of its own (configs written before
        the head was a per-task option have none): "linear" (the paper's baseline: concatenation -> dropout ->
        linear -> sigmoid x 5) or "cosine" (the paper's improvement: ReLU(cos(u, v)) x 5).
    classifier_dropout (`float`, defaults to 0.3):
        Dropout before each task's linear head.
    pooling (`str`, defaults to `"pooler"`):
        Sentence embedding: "pooler" (BERT's pooler output, as in the paper) or "mean" (attention-masked mean of the
        last hidden states).
    pal_decoder_init (`str`, defaults to `"zeros"`):
        "zeros" makes a freshly added PAL output exactly 0, so the model computes what the loaded BERT computes until
        training moves it; "normal" is the original code's N(0, initializer_range).
    pack_tokens (`bool`, defaults to `True`):
        In training, run the linear layers on the real tokens of a padded batch only (attention alone sees the padded
        layout): the same values for every real token, without the cost of the padding.
    """

    model_type = "bert_pals"
    # The Trainer keeps only the logits as predictions.
    keys_to_ignore_at_inference = ["embeddings", "embeddings_b"]

    pal_size: int = 204
    pal_num_heads: int = 6
    use_pals: bool = True
    # A dict or None: `validate_pals` checks it, with a message that says what a task entry is (the strict type
    # check of `dict | None` would raise a multi-line error that does not).
    tasks: Any = None
    sts_head: str = "cosine"
    classifier_dropout: float | int | None = 0.3
    pooling: str = "pooler"
    pal_decoder_init: str = "zeros"
    pack_tokens: bool = True

    def __post_init__(self, **kwargs):
        if self.classifier_dropout is None:  # a BERT checkpoint's config.json may carry null
            self.classifier_dropout = 0.3
        if self.tasks is None:
            self.tasks = {name: dict(spec) for name, spec in DEFAULT_TASKS.items()}
        self.validate_pals()
        super().__post_init__(**kwargs)

    def validate_pals(self):
        """
        Checks the PAL and task options. Runs at `__init__` (a `@strict` class validator), and again in `from_dict`
        after `from_pretrained(..., **overrides)` has set its overrides, which bypass `__init__`.
        """
        if not isinstance(self.tasks, dict):
            raise ValueError(
                f'`tasks` must be a dict {{name: {{"kind": ..., "num_labels": ...}}}}; got '
                f"{type(self.tasks).__name__} {self.tasks!r}."
            )
        if not self.tasks:
            raise ValueError("`tasks` is empty: give at least one task, e.g. {'sst': {'kind': 'classification'}}.")
        for name, spec in self.tasks.items():
            self.check_task(name, spec, self.sts_head)
        if self.pal_size <= 0 or self.pal_num_heads <= 0 or self.pal_size % self.pal_num_heads != 0:
            raise ValueError(
                f"pal_size ({self.pal_size}) must be a positive multiple of pal_num_heads ({self.pal_num_heads})."
            )
        for name, value, allowed in (
            ("sts_head", self.sts_head, STS_HEADS),
            ("pooling", self.pooling, POOLINGS),
            ("pal_decoder_init", self.pal_decoder_init, PAL_DECODER_INITS),
        ):
            if value not in allowed:
                raise ValueError(f"Unknown {name} {value!r}; expected one of {allowed}.")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1); got {self.classifier_dropout}.")

    @staticmethod
    def check_task(name: str, spec: dict, sts_head: str = "cosine"):
        """Checks one entry of `tasks`: name, kind, number of labels and head options (a `ValueError` otherwise)."""
        # The name keys the task's modules (`heads.<name>`): torch refuses a "." or an empty name, and a non-string.
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(
                f"Task name {name!r}: a task name must be a non-empty string without '.' (it names the task's "
                "modules, e.g. `heads.<name>`); use letters, digits and underscores."
            )
        if not isinstance(spec, dict):
            raise ValueError(
                f'Task {name!r} must be a dict {{"kind": ..., "num_labels": ...}}; got {type(spec).__name__} {spec!r}.'
            )
        kind = spec.get("kind")
        if kind not in TASK_KINDS:
            raise ValueError(f"Task {name!r} has kind {kind!r}; expected one of {TASK_KINDS}.")
        num_labels = spec.get("num_labels", 1)
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"Task {name!r} has num_labels={num_labels!r}; expected a positive int.")
        BertPalsConfig._check_outputs(name, spec, num_labels)
        for key, option in HEAD_OPTIONS.items():
            if key in spec and LEGACY_OPTION_VALUES.get((kind, key)) != spec[key]:
                problem = option.problem(kind, spec[key])
                if problem is not None:
                    raise ValueError(f"Task {name!r} ({kind}): {problem}.")
        BertPalsConfig._check_option_combination(name, spec, num_labels, sts_head)

    @staticmethod
    def _check_outputs(name: str, spec: dict, num_labels: int):
        """What the outputs mean: a classification task's `label_names`, a regression task's `max_score`."""
        label_names = spec.get("label_names")
        if label_names is not None:
            if spec["kind"] == "pair_regression":
                raise ValueError(
                    f"Task {name!r} is a regression task: it has a score range (`max_score`), not labels."
                )
            names_ok = isinstance(label_names, (list, tuple)) and all(isinstance(n, str) and n for n in label_names)
            if not names_ok or len(label_names) != num_labels or len(set(label_names)) != num_labels:
                raise ValueError(
                    f"Task {name!r}: `label_names` must be {num_labels} distinct non-empty strings, one per class in "
                    f"label order; got {label_names!r}."
                )
        max_score = spec.get("max_score", 5.0)
        if isinstance(max_score, bool) or not isinstance(max_score, (int, float)) or not max_score > 0:
            raise ValueError(f"Task {name!r}: `max_score` must be a positive number; got {max_score!r}.")

    @staticmethod
    def _check_option_combination(name: str, spec: dict, num_labels: int, sts_head: str):
        """The head options that are valid one by one but not together."""
        kind = spec["kind"]
        if spec.get("encoding") == "cross" and spec.get("features", "concat") != "concat":
            raise ValueError(f"Task {name!r}: `features` are those of two separately encoded sentences, not 'cross'.")
        if (
            kind == "pair_regression"
            and spec.get("head", sts_head) == "cosine"
            and spec.get("features", "concat") != "concat"
        ):
            raise ValueError(f"Task {name!r}: the cosine head has no `features` (the 'linear' head has).")
        if spec.get("loss") == "cross_entropy+ranking" and (spec.get("encoding") == "cross" or num_labels != 2):
            raise ValueError(
                f"Task {name!r}: the ranking loss needs two separately encoded sentences and binary labels."
            )

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict, dict]:
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == "bert":
            # A plain BERT checkpoint: every BERT option carries over, the PAL and task options take their defaults.
            # This is the intended use, so `from_pretrained` should not warn about a model type mismatch.
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        result = super().from_dict(config_dict, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        config.validate_pals()  # `from_dict` sets keyword overrides after `__init__` has validated
        return result

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def label_names(self, task: str) -> list[str]:
        """The class names of a classification task: the saved `label_names`, else `LABEL_0`, `LABEL_1`, ..."""
        spec = self.tasks[task]
        saved = spec.get("label_names")
        return list(saved) if saved else [f"LABEL_{i}" for i in range(spec.get("num_labels", 1))]

    def score_range(self, task: str) -> tuple[float, float]:
        """The range of a regression task's scores: [0, `max_score`]."""
        return 0.0, float(self.tasks[task].get("max_score", 5.0))


__all__ = ["BertPalsConfig"]
