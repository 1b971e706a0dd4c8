# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""The multitask pipeline of [`BertPalsForMultitask`]: sentences and sentence pairs in, class names and scores out.

Remote-code file: it imports nothing beyond torch and transformers, so that it travels with the model's code files
(`save_pretrained` writes it next to them and registers it in the config's `custom_pipelines`), and
`pipeline(model=path_or_repo, trust_remote_code=True)` builds it in any process.
"""

import torch
from transformers import Pipeline


# The name the pipeline is registered under, in the config's `custom_pipelines` and in `PIPELINE_REGISTRY`.
PIPELINE_TASK = "bert-pals-multitask"
# `pipe(list_of_inputs)` runs the model on batches of this many inputs unless `batch_size=` says otherwise.
DEFAULT_BATCH_SIZE = 32
_TOP_ONE = object()  # `top_k` not given: one {"label", "score"} dict per input, as text-classification gives


def custom_pipelines_entry() -> dict:
    """What `config.custom_pipelines` holds, so that `pipeline(model=..., trust_remote_code=True)` finds this class."""
    return {
        PIPELINE_TASK: {
            "impl": f"{__name__.split('.')[-1]}.{BertPalsMultitaskPipeline.__name__}",
            "pt": ["AutoModel"],
            "type": "text",
        }
    }


class BertPalsMultitaskPipeline(Pipeline):
    """
    Every task of a [`BertPalsForMultitask`] model behind one call.

    - `pipe("I loved it", task="sst")` gives `{"label": "very positive", "score": 0.83}` (the class probability);
      `top_k=n` gives the n most likely classes as a list, `top_k=None` all of them.
    - `pipe({"text": a, "text_pair": b}, task="para")` reads a pair; a regression task (`task="sts"`) gives
      `{"score": 3.9}`, on the task's range `[0, max_score]`.
    - A list of inputs gives a list of results, computed in batches of `batch_size` (32 by default).
    - Without `task=`, every task that takes the input runs: `{"sst": {...}, ...}` for a sentence,
      `{"para": {...}, "sts": {...}}` for a pair.

    Each head's `encoding` decides how a pair is tokenised: two sequences ("separate", a bi-encoder) or one
    `[CLS] a [SEP] b [SEP]` ("cross"). `max_length` truncates every sequence (default: the model's position
    embeddings, or the tokenizer's limit if lower); pass the `--max_seq_length` of training (128) to get exactly
    the predictions of `run_multitask.py --do_predict` on longer texts.
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("batch_size", DEFAULT_BATCH_SIZE)
        super().__init__(*args, **kwargs)

    # Inputs

    def _check_task(self, task) -> str:
        tasks = self.model.config.task_names
        if task not in tasks:
            raise ValueError(f"Unknown task {task!r}; this model has tasks {tasks}.")
        return task

    def _takes_pair(self, task: str) -> bool:
        return self.model.heads[task].encoding != "single"

    def _expected(self, task: str) -> str:
        if self._takes_pair(task):
            return 'a sentence pair {"text": first, "text_pair": second}'
        return "one sentence (a string)"

    @staticmethod
    def _is_pair(inputs) -> bool:
        return isinstance(inputs, dict)

    def _check_input(self, inputs, task: str):
        """`inputs` as `(text, text_pair)` (None for one sentence); a `ValueError` naming the task otherwise."""
        wants_pair = self._takes_pair(task)
        if isinstance(inputs, str) and not wants_pair:
            return inputs, None
        if (
            wants_pair
            and isinstance(inputs, dict)
            and set(inputs) == {"text", "text_pair"}
            and all(isinstance(inputs[key], str) for key in inputs)
        ):
            return inputs["text"], inputs["text_pair"]
        got = f"a {type(inputs).__name__} {inputs!r}" if not isinstance(inputs, str) else f"the string {inputs!r}"
        raise ValueError(f"Task {task!r} takes {self._expected(task)}; got {got}.")

    def _max_length(self, max_length: int | None) -> int:
        limit = min(self.model.config.max_position_embeddings, self.tokenizer.model_max_length)
        if max_length is None:
            return limit
        if not isinstance(max_length, int) or isinstance(max_length, bool) or not 2 < max_length <= limit:
            raise ValueError(f"max_length must be an int in [3, {limit}] (the model's positions); got {max_length!r}.")
        return max_length

    # The call

    def __call__(self, inputs, task: str | None = None, **kwargs):
        """See the class docstring. `task=None` runs every task that takes `inputs`."""
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            if task is None:
                raise ValueError("Got an empty list; pass a sentence, a sentence pair, or a non-empty list of them.")
            raise ValueError(
                f"Task {task!r}: got an empty list; pass {self._expected(self._check_task(task))}, or a list of them."
            )
        if task is not None:
            self._check_task(task)
            return super().__call__(inputs, task=task, **kwargs)
        items = inputs if isinstance(inputs, list) else [inputs]
        kinds = {self._is_pair(item) for item in items}
        if len(kinds) > 1:
            raise ValueError("Without `task=`, pass only sentences or only sentence pairs (the tasks differ).")
        pair = kinds.pop()
        tasks = [name for name in self.model.config.task_names if self._takes_pair(name) == pair]
        if not tasks:
            raise ValueError(
                f"No task of this model takes {items[0]!r}; its tasks are {self.model.config.task_names}."
            )
        results = {
            name: super(BertPalsMultitaskPipeline, self).__call__(inputs, task=name, **kwargs) for name in tasks
        }
        if isinstance(inputs, list):
            return [{name: results[name][i] for name in tasks} for i in range(len(inputs))]
        return results

    def _sanitize_parameters(self, task=None, top_k=_TOP_ONE, max_length=None):
        preprocess, forward, postprocess = {}, {}, {}
        if task is not None:
            self._check_task(task)
            preprocess["task"] = forward["task"] = postprocess["task"] = task
        if max_length is not None:
            preprocess["max_length"] = self._max_length(max_length)
        if top_k is not _TOP_ONE:
            if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
                raise ValueError(f"top_k must be a positive int, or None for every class; got {top_k!r}.")
            postprocess["top_k"] = top_k
        return preprocess, forward, postprocess

    def preprocess(self, inputs, task: str, max_length: int | None = None) -> dict[str, torch.Tensor]:
        text, text_pair = self._check_input(inputs, task)
        max_length = max_length or self._max_length(None)
        encode = dict(truncation=True, max_length=max_length, return_tensors="pt")
        if text_pair is None:
            return dict(self.tokenizer(text, **encode))
        if self.model.heads[task].encoding == "cross":
            return dict(self.tokenizer(text, text_pair, **encode))
        first, second = self.tokenizer(text, **encode), self.tokenizer(text_pair, **encode)
        return {**first, **{f"{key}_b": value for key, value in second.items()}}

    def _forward(self, model_inputs: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
        return {"logits": self.model(task=task, **model_inputs).logits}

    def get_inference_context(self):
        return torch.inference_mode

    def postprocess(self, model_outputs, task: str, top_k=_TOP_ONE):
        head = self.model.heads[task]
        logits = model_outputs["logits"][0]
        if head.is_regression:
            if top_k is not _TOP_ONE:
                raise ValueError(f"Task {task!r} gives a score, not classes: top_k does not apply.")
            return {"score": head.predictions(logits).item()}
        probabilities = logits.float().softmax(-1)
        names = self.model.config.label_names(task)
        # The top class is the head's prediction (argmax), as in the prediction files.
        first = int(head.predictions(logits))
        order = [first] + [i for i in probabilities.argsort(descending=True).tolist() if i != first]
        ranked = [{"label": names[i], "score": probabilities[i].item()} for i in order]
        if top_k is _TOP_ONE:
            return ranked[0]
        return ranked if top_k is None else ranked[:top_k]


__all__ = ["BertPalsMultitaskPipeline", "PIPELINE_TASK"]
