# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Where the time of a training step goes: the README main command's step (combined preset, batch 8 per task), on CPU.

Builds the trainer exactly as `run_multitask.py` does, draws real round-robin steps from its own dataloader, and
times each part of the step separately: data loading and collation, each task's forward and backward, the gradient
combination (surgery), clipping, the optimizer, zeroing. Then prints the top operators from `torch.profiler` and the
multiply-add count of the encoder, against what a plain matrix product reaches on this machine.

    python benchmarks/profile_step.py [--steps 30] [--preset combined] [-- extra run_multitask.py flags]
"""

import argparse
import statistics
import sys
import time
from collections import defaultdict

import torch
from accelerate.utils import send_to_device
from torch.profiler import ProfilerActivity, profile

import run_multitask
from trainer.multitask_trainer import MultitaskTrainer
from trainer.tasks import PAPER_TASKS
from trainer.tokenization import tokenize_split


def build_trainer(preset: str, extra: list[str]) -> MultitaskTrainer:
    argv = [
        "--preset", preset, "--output_dir", "/tmp/profile_step", "--per_device_train_batch_size", "8",
        "--report_to", "none", "--do_train", "--tasks", *PAPER_TASKS, *extra,
    ]  # fmt: skip
    model_args, data_args, training_args = run_multitask.parse_args(argv)
    raw = run_multitask.load_raw_datasets(data_args, None)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    model = run_multitask.build_model(model_args, run_multitask.build_config(model_args, data_args.tasks))
    train = tokenize_split(raw, "train", tokenizer, {task: model.heads[task].encoding for task in raw})
    trainer = MultitaskTrainer(model=model, args=training_args, train_dataset=train, processing_class=tokenizer)
    trainer.create_optimizer_and_scheduler(num_training_steps=1000)
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def encoder_macs(config, batch) -> int:
    """Multiply-adds of one forward of the encoder (linear layers, attention, PALs) over the padded batch."""
    rows, length = batch["input_ids"].shape
    if "input_ids_b" in batch:  # both sentences run as one batch padded to the longer
        rows, length = 2 * rows, max(length, batch["input_ids_b"].shape[1])
    h, f, p = config.hidden_size, config.intermediate_size, config.pal_size
    per_token = 4 * h * h + 2 * h * f + 2 * length * h
    if config.use_pals:
        per_token += 2 * h * p + 3 * p * p + 2 * length * p
    return rows * length * per_token * config.num_hidden_layers


def count_tokens(step: dict) -> tuple[int, int]:
    """The tokens of a step's batches: padded, and real (the attention masks' ones)."""
    padded = sum(
        b["input_ids"].numel() + (b["input_ids_b"].numel() if "input_ids_b" in b else 0) for b in step.values()
    )
    real = sum(
        int(b["attention_mask"].sum()) + int(b.get("attention_mask_b", torch.zeros(1)).sum()) for b in step.values()
    )
    return padded, real


def matmul_gmacs() -> float:
    """A plain matrix product's throughput on this machine (G multiply-adds per second), for the floor."""
    a, b = torch.randn(1024, 384), torch.randn(384, 1536)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    return 1024 * 384 * 1536 * 20 / (time.perf_counter() - start) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--preset", default="combined")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    trainer = build_trainer(args.preset, extra)
    model, optimizer = trainer.model, trainer.optimizer
    config = model.config
    iterator = iter(trainer.get_train_dataloader())
    parts = defaultdict(list)
    macs, tokens, real_tokens = [], [], []

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        parts[name].append(time.perf_counter() - start)
        return result

    def one_step(record: bool, split: bool = True):
        step = timed("data (sampler + collate)", lambda: next(iterator))
        step = send_to_device(step, trainer.args.device)
        if record:
            macs.append(sum(encoder_macs(config, batch) for batch in step.values()))
            padded, real = count_tokens(step)
            tokens.append(padded)
            real_tokens.append(real)
        model.train()
        # The trainer's own step, split: its per-task forward and backward are what `training_step` runs.
        timed("training_step (forward + backward, all tasks, + combine)", lambda: trainer.training_step(model, step))
        with torch.no_grad():
            for task, batch in step.items() if split else ():
                timed(f"  forward {task} (no grad, for the split)", lambda: model(**batch))
        timed("clip_grad_norm", lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        timed("optimizer.step", optimizer.step)
        timed("zero_grad", lambda: model.zero_grad(set_to_none=True))

    for _ in range(3):
        one_step(False)
    parts.clear()
    for _ in range(args.steps):
        one_step(True)

    rows = trainer.gradient_rows
    print(f"{args.preset} preset, batch 8 per task, {args.steps} steps, torch threads {torch.get_num_threads()}")
    print(f"gradient rows {rows.rows.shape[0]} x {rows.rows.shape[1]:,} ({rows.nbytes / 2**20:.0f} MiB)")
    print(
        f"padded tokens per step {statistics.mean(tokens):.0f} (real {statistics.mean(real_tokens):.0f}); "
        f"encoder multiply-adds per step (forward) {statistics.mean(macs) / 1e9:.2f} G"
    )
    for name, values in parts.items():
        print(
            f"{name:<60} {statistics.median(values) * 1e3:9.1f} ms (median)  "
            f"{statistics.mean(values) * 1e3:9.1f} ms (mean)"
        )
    gmacs = matmul_gmacs()
    floor = 3 * statistics.mean(macs) / 1e9 / gmacs
    print(f"plain matmul here: {gmacs:.0f} GMAC/s -> forward + backward floor (3x forward MACs) {floor * 1e3:.0f} ms")

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            one_step(False, split=False)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=50))


if __name__ == "__main__":
    sys.exit(main())
