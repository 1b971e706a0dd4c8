# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Dynamic padding of task batches."""

from dataclasses import dataclass

import torch


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class MultitaskCollator:
    """
    Pads each batch to its own longest sentence. `__call__` collates the rows of one task into the keyword
    arguments of `BertPalsForMultitask.forward` (with `task`); `collate_step` collates a training step that mixes
    tasks into `{task: batch}`.
    """

    tokenizer: object
    pad_to_multiple_of: int | None = None

    def _pad(self, features, suffix=""):
        encoded = [{key: f[key + suffix] for key in MODEL_INPUTS if key + suffix in f} for f in features]
        padded = self.tokenizer.pad(encoded, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
        return {key + suffix: value for key, value in padded.items()}

    def __call__(self, features: list[dict]) -> dict:
        tasks = {f["task"] for f in features}
        if len(tasks) != 1:
            raise ValueError(f"A batch must hold one task; got {sorted(tasks)}. Use `collate_step` for a mixed step.")
        batch = {"task": features[0]["task"], **self._pad(features)}
        if "input_ids_b" in features[0]:
            batch.update(self._pad(features, suffix="_b"))
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            dtype = torch.float32 if isinstance(labels[0], float) else torch.long
            batch["labels"] = torch.tensor(labels, dtype=dtype)
        return batch

    def collate_step(self, features: list[dict]) -> dict[str, dict]:
        by_task = {}
        for feature in features:
            by_task.setdefault(feature["task"], []).append(feature)
        return {task: self(rows) for task, rows in by_task.items()}
