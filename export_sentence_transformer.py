# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
One bi-encoded task of a trained model as a sentence-transformers model (the `embeddings` extra):

    python export_sentence_transformer.py outputs/combined --task sts --output_dir outputs/combined-sts-embeddings

then `SentenceTransformer("outputs/combined-sts-embeddings", trust_remote_code=True).encode(sentences)` gives the
sentence embeddings that task's head reads: the shared BERT with the task's PALs (`BertPalsForSentenceEmbedding`,
remote code), then the model's pooling, the masked mean or BERT's pooler ([CLS], dense, tanh).
"""

import argparse
import sys
import tempfile
from pathlib import Path

from torch import nn
from transformers import AutoTokenizer

from modeling_bert_pals import BertPalsConfig, BertPalsForMultitask, BertPalsForSentenceEmbedding


def sentence_encoder(model: BertPalsForMultitask, task: str) -> BertPalsForSentenceEmbedding:
    """`task`'s encoder: the shared weights and that task's PALs, copied into a one-task model."""
    if task not in model.heads:
        raise ValueError(f"Unknown task {task!r}; this model has tasks {model.config.task_names}.")
    if model.heads[task].encoding != "separate":
        bi_encoded = [name for name, head in model.heads.items() if head.encoding == "separate"]
        reads = "a pair as one sequence" if model.heads[task].encoding == "cross" else "one sentence"
        raise ValueError(
            f"Task {task!r} reads {reads}: its head does not compare two sentence embeddings. Export a task whose "
            f"pairs are encoded separately: {bi_encoded}."
        )
    values = {**model.config.to_dict(), "tasks": {task: dict(model.config.tasks[task])}}
    for key in ("custom_pipelines", "auto_map", "architectures"):  # the multitask model's, not the encoder's
        values.pop(key, None)
    encoder = BertPalsForSentenceEmbedding(BertPalsConfig.from_dict(values))
    weights = {
        name: tensor
        for name, tensor in model.bert.state_dict().items()
        if model.parameter_task(f"bert.{name}") in (None, task)
    }
    encoder.bert.load_state_dict(weights, strict=True)
    return encoder.eval()


def export_sentence_transformer(model_dir: str, task: str, output_dir: str, max_seq_length: int = 128):
    """Writes `task`'s sentence encoder of the model in `model_dir` as a sentence-transformers folder."""
    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
    except ImportError as error:
        raise ImportError("The export needs sentence-transformers: pip install -e '.[embeddings]'.") from error
    model = BertPalsForMultitask.from_pretrained(model_dir).eval()
    encoder = sentence_encoder(model, task)
    hidden_size = model.config.hidden_size
    with tempfile.TemporaryDirectory() as staging:
        encoder.save_pretrained(staging)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(staging)
        remote = {"trust_remote_code": True}
        transformer = Transformer(
            staging,
            max_seq_length=min(max_seq_length, model.config.max_position_embeddings),
            model_kwargs=remote,
            config_kwargs=remote,
            processor_kwargs=remote,
            # The token embeddings BERT gives: what the pooling below reads
            modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            module_output_name="token_embeddings",
        )
        # In this process the Auto classes map the config to the multitask model (the package registers it): the
        # module gets the encoder itself, which it saves with its own class in the config's `auto_map`.
        transformer.model = encoder
        modules = [transformer]
        if model.config.pooling == "mean":
            modules.append(Pooling(hidden_size, "mean"))
        else:  # BERT's pooler: the [CLS] vector through its dense layer and tanh
            modules.append(Pooling(hidden_size, "cls"))
            dense = Dense(hidden_size, hidden_size, bias=True, activation_function=nn.Tanh())
            dense.linear.load_state_dict(model.bert.pooler.dense.state_dict())
            modules.append(dense)
        SentenceTransformer(modules=modules, similarity_fn_name="cosine").save(output_dir)
    return Path(output_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a model saved by run_multitask.py (or save_pretrained)")
    parser.add_argument("--task", required=True, help="a task whose pairs are encoded separately, e.g. sts")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_seq_length", type=int, default=128, help="longer sentences are truncated")
    args = parser.parse_args(argv)
    try:
        path = export_sentence_transformer(args.model_dir, args.task, args.output_dir, args.max_seq_length)
    except (ValueError, OSError, ImportError) as error:
        print(f"export_sentence_transformer.py: error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {path}: SentenceTransformer({str(path)!r}, trust_remote_code=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
