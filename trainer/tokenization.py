"""Tokenisation of one task's dataset into the columns `BertPalsForMultitask.forward` takes."""

import datasets


PAIR_KINDS = ("pair_classification", "pair_regression")


def tokenize_task(
    dataset: datasets.Dataset, tokenizer, task: str, kind: str, max_seq_length: int = 128, num_proc: int | None = None
) -> datasets.Dataset:
    """
    Adds `input_ids`, `attention_mask`, `token_type_ids` (and their `_b` twins for the second sentence of pair
    tasks: the two sentences are encoded separately), `labels` where the split has labels, and a constant `task`
    column. Padding is left to the collator, per batch.
    """
    is_pair = kind in PAIR_KINDS
    has_labels = "label" in dataset.column_names and None not in dataset.unique("label")

    def tokenize(batch):
        first = batch["sentence1"] if is_pair else batch["sentence"]
        encoded = dict(tokenizer(first, truncation=True, max_length=max_seq_length))
        if is_pair:
            second = tokenizer(batch["sentence2"], truncation=True, max_length=max_seq_length)
            encoded.update({f"{key}_b": value for key, value in second.items()})
        if has_labels:
            encoded["labels"] = batch["label"]
        encoded["task"] = [task] * len(first)
        return encoded

    keep = {"id"}
    return dataset.map(
        tokenize,
        batched=True,
        num_proc=num_proc,
        remove_columns=[column for column in dataset.column_names if column not in keep],
        desc=f"Tokenizing {task}",
    )
