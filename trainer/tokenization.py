# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Tokenisation of one task's dataset into the columns `BertPalsForMultitask.forward` takes, and of a split of many."""

import contextlib
from collections.abc import Callable

import datasets

from .tasks import get_task


ENCODINGS = ("single", "separate", "cross")


def tokenize_task(
    dataset: datasets.Dataset,
    tokenizer,
    task: str,
    encoding: str = "separate",
    max_seq_length: int = 128,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """
    Adds `input_ids`, `attention_mask`, `token_type_ids`, `labels` where the split has labels, and a constant `task`
    column. `encoding` is the `encoding` of the task's head: the second sentence of a pair gets its own `_b` columns
    when the head encodes the two sentences separately ("separate"), or joins the first in one sequence
    `[CLS] a [SEP] b [SEP]` with token types 0 and 1 ("cross"; truncated longest first). Padding is left to the
    collator, per batch.
    """
    columns = get_task(task).text_columns
    if encoding not in ENCODINGS:
        raise ValueError(f"tokenize_task: encoding {encoding!r} is not one of {ENCODINGS} (a head's `encoding`).")
    has_labels = "label" in dataset.column_names and None not in dataset.unique("label")

    def tokenize(batch):
        texts = [batch[column] for column in columns]
        if encoding == "cross":
            encoded = dict(tokenizer(*texts, truncation=True, max_length=max_seq_length))
        else:
            encoded = dict(tokenizer(texts[0], truncation=True, max_length=max_seq_length))
        if len(texts) == 2 and encoding == "separate":
            second = tokenizer(texts[1], truncation=True, max_length=max_seq_length)
            encoded.update({f"{key}_b": value for key, value in second.items()})
        if has_labels:
            encoded["labels"] = batch["label"]
        encoded["task"] = [task] * len(texts[0])
        return encoded

    keep = {"id"}
    return dataset.map(
        tokenize,
        batched=True,
        num_proc=num_proc,
        remove_columns=[column for column in dataset.column_names if column not in keep],
        desc=f"Tokenizing {task}",
    )


def tokenize_split(
    raw: dict[str, datasets.DatasetDict],
    split: str,
    tokenizer,
    encodings: dict[str, str],
    max_seq_length: int = 128,
    num_proc: int | None = None,
    limit: int | None = None,
    main_process_first: Callable[..., contextlib.AbstractContextManager] | None = None,
) -> dict[str, datasets.Dataset]:
    """
    `{task: tokenised split}` for every task of `raw` (`{task: DatasetDict}`, in its order) that has `split`, each
    with its first `limit` rows and the `encoding` of its head (`encodings[task]`, e.g. `model.heads[task].encoding`).
    `main_process_first`: the training arguments' own, so that in a process group the main process tokenises (and
    fills the cache) first.
    """
    tokenized = {}
    for task, splits in raw.items():
        if split not in splits:
            continue
        dataset = splits[split]
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        first = (
            main_process_first(desc=f"tokenizing {task} {split}") if main_process_first else contextlib.nullcontext()
        )
        with first:
            tokenized[task] = tokenize_task(dataset, tokenizer, task, encodings[task], max_seq_length, num_proc)
    return tokenized
