# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
MultitaskTrainer under FSDP2 on the CPU: `torchrun --nproc_per_node 2 run_multitask.py ... --fsdp full_shard` (gloo)
against one process on the union of the batches, for every gradient surgery; what each process holds; a killed run
resumed; the saved model loaded with remote code in a fresh process.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from conftest import SAME_TRAINING_TOLERANCE, tiny_config
from safetensors.torch import load_file
from transformers import BertModel

from modeling_bert_pals import BertPalsForMultitask


REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
# A collective that waits longer than this fails the run: a hang costs minutes, not the default 30.
DDP_TIMEOUT = ["--ddp_timeout", "300"]
# The README's: FSDP2, one unit per layer (and, as Accelerate does, one for the word embeddings), the root the rest.
FSDP_CONFIG = REPO / "trainer" / "fsdp2_config.json"
SHARDS = re.compile(r"Process (\d) of 2: gradient rows (\d+) x ([\d,]+) .*parameters ([\d,]+) of ([\d,]+) entries")


def tiny_args(checkpoint, data_dir, output_dir, *extra):
    return [
        "--model_name_or_path", checkpoint, "--data_dir", str(data_dir), "--output_dir", str(output_dir),
        "--pal_size", "12", "--pal_num_heads", "3", "--pal_decoder_init", "normal", "--classifier_dropout", "0",
        "--report_to", "none", "--disable_tqdm", "True", "--seed", "0", "--dataloader_pin_memory", "False",
        "--preset", "combined", "--do_train", "--max_train_samples", "48", *DDP_TIMEOUT, *extra,
    ]  # fmt: skip


def fsdp_args(strategy="full_shard"):
    """`full_shard`: parameters resharded after each forward; `shard_grad_op`: gathered once per optimizer step."""
    return [
        "--fsdp",
        strategy,
        "--fsdp_config",
        str(FSDP_CONFIG),
        "--log_level",
        "info",
        "--log_level_replica",
        "info",
    ]


def run_one(args):
    result = subprocess.run(
        [sys.executable, "run_multitask.py", *args], cwd=REPO, env=ENV, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


def torchrun(args, **kwargs):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run([*command, "run_multitask.py", *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          **kwargs)  # fmt: skip


def local_numel(shape, rank, world_size=2):
    """Entries of `rank`'s shard of a tensor of `shape` under FSDP2: chunks of its first dimension."""
    rows = torch.empty(shape[0]).chunk(world_size)
    return (rows[rank].numel() if rank < len(rows) else 0) * torch.Size(shape[1:]).numel()


def assert_each_process_held_its_shards(log, surgery):
    """The log line each process writes when it allocates its task rows (the sizes of the real tensors), against the
    shard sizes FSDP2's rule gives for the model's parameters."""
    lines = {int(m[1]): [int(x.replace(",", "")) for x in m.groups()[1:]] for m in SHARDS.finditer(log)}
    assert sorted(lines) == [0, 1], log[-3000:]
    model = BertPalsForMultitask(tiny_config(sts_head="cosine", vocab_size=30522, max_position_embeddings=512))
    shared = [p.shape for p in model.shared_parameters()]
    everything = [p.shape for p in model.parameters()]
    total_shared, total = sum(s.numel() for s in shared), sum(s.numel() for s in everything)
    for rank, (rows, columns, held, logged_total) in lines.items():
        assert rows == (1 if surgery == "none" else 3)  # one row per task for surgery, one summed row otherwise
        assert columns == sum(local_numel(s, rank) for s in shared) < 0.6 * total_shared
        assert held == sum(local_numel(s, rank) for s in everything) < 0.6 * total
        assert logged_total == total
    assert lines[0][1] + lines[1][1] == total_shared and lines[0][2] + lines[1][2] == total


def largest_differences(a, b, initial):
    update = max((a[k] - initial[k]).abs().max().item() for k in a if k in initial)
    difference = max((a[k] - b[k]).abs().max().item() for k in a)
    return update, difference


@pytest.mark.slow
@pytest.mark.parametrize(
    "surgery, strategy",
    # Every method under `full_shard`: test_methods_on_processes.py. Here what each process holds (one summed row
    # for `none`, one per task for surgery), and the parameters gathered once per step.
    [("none", "full_shard"), ("gradvac", "shard_grad_op")],
    ids=["none", "gradvac-gathered-once-per-step"],
)
def test_fsdp_two_processes_equal_one_process_on_the_union(tiny_checkpoint, data_dir, tmp_path, surgery, strategy):
    """PALs, heads, gradient accumulation 2, 3 optimizer steps: 2 FSDP2 processes with batch 2 per task and process
    against one process with batch 4, to `SAME_TRAINING_TOLERANCE` of the update (conftest.py). With `shard_grad_op`
    the parameters stay gathered over the step's 2 x 3 task passes."""
    common = ["--gradient_surgery", surgery, "--max_steps", "3", "--gradient_accumulation_steps", "2", "--optim",
              "sgd", "--learning_rate", "0.05", "--lr_scheduler_type", "constant", "--save_strategy", "no",
              "--gradvac_beta", "0.5"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    run_one(tiny_args(tiny_checkpoint, data_dir, one, *common, "--per_device_train_batch_size", "4"))
    result = torchrun(tiny_args(tiny_checkpoint, data_dir, two, *common, "--per_device_train_batch_size", "2",
                                *fsdp_args(strategy)))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "FSDP2 on a CPU (gloo) process group" in log
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in log
    assert_each_process_held_its_shards(log, surgery)
    assert json.loads((two / "trainer_state.json").read_text())["global_step"] == 3

    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys()
    initial = {f"bert.{k}": v for k, v in BertModel.from_pretrained(tiny_checkpoint).state_dict().items()}
    update, difference = largest_differences(a, b, initial)
    print(f"{surgery}: largest update of a shared weight {update:.2e}, largest difference {difference:.2e}")
    assert update > 1e-3
    assert difference < SAME_TRAINING_TOLERANCE * update


@pytest.mark.slow
def test_fsdp_bf16_mixed_precision_trains(tiny_checkpoint, data_dir, tmp_path):
    """bf16 under FSDP2 (parameters gathered and computed in bf16, the task rows and the update in float32)."""
    args = ["--gradient_surgery", "gradvac", "--max_steps", "3", "--gradient_accumulation_steps", "2", "--optim",
            "sgd", "--learning_rate", "0.05", "--save_strategy", "no", "--per_device_train_batch_size", "2", "--bf16",
            "--logging_steps", "1"]  # fmt: skip
    result = torchrun(tiny_args(tiny_checkpoint, data_dir, tmp_path / "run", *args, *fsdp_args()))
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    cosines = [value for entry in history for key, value in entry.items() if key.endswith("/cosine")]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses + cosines)))
    weights = load_file(tmp_path / "run" / "model.safetensors")
    initial = {f"bert.{k}": v for k, v in BertModel.from_pretrained(tiny_checkpoint).state_dict().items()}
    assert all(tensor.dtype == torch.float32 and torch.isfinite(tensor).all() for tensor in weights.values())
    assert 1e-3 < max((weights[k] - initial[k]).abs().max().item() for k in initial) < 1.0


def kill_with_workers(process: subprocess.Popen) -> None:
    """SIGKILL to torchrun's workers (in sessions of their own) and to torchrun, as a crash of the machine would."""
    for child in psutil.Process(process.pid).children(recursive=True):
        child.send_signal(signal.SIGKILL)
    process.send_signal(signal.SIGKILL)
    process.wait()


def wait_for(path: Path, process: subprocess.Popen, timeout=300.0):
    start = time.monotonic()
    while not path.is_file():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() - start < timeout
        time.sleep(0.02)


@pytest.mark.slow
def test_fsdp_killed_run_resumes_to_the_same_weights_and_loads_in_one_process(tiny_checkpoint, data_dir, tmp_path):
    """
    AdamW, a decaying learning rate, gradient accumulation and GradVac under FSDP2: a run SIGKILLed (both processes
    and torchrun) once its checkpoint of step 2 is complete, resumed from its last complete checkpoint, ends with the
    weights, the optimizer-visible state and the GradVac targets of an uninterrupted run. Its model folder loads with
    `trust_remote_code` in a fresh process that never imported this repository's code.
    """
    common = ["--gradient_surgery", "gradvac", "--max_steps", "8", "--gradient_accumulation_steps", "2", "--optim",
              "adamw_torch", "--learning_rate", "1e-3", "--lr_scheduler_type", "linear", "--max_grad_norm", "1.0",
              "--save_strategy", "steps", "--save_steps", "2", "--per_device_train_batch_size", "2",
              *fsdp_args("shard_grad_op")]  # fmt: skip
    full, killed = tmp_path / "full", tmp_path / "killed"
    result = torchrun(tiny_args(tiny_checkpoint, data_dir, full, *common))
    assert result.returncode == 0, result.stderr[-3000:]

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "run_multitask.py", *tiny_args(tiny_checkpoint, data_dir, killed, *common)]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(killed / "checkpoint-2" / "run_config.json", process)  # written last: the checkpoint is complete
    finally:
        kill_with_workers(process)
    assert not (killed / "model.safetensors").exists() and not (killed / "checkpoint-8").exists()

    result = torchrun(tiny_args(tiny_checkpoint, data_dir, killed, *common, "--resume_from_checkpoint", "true"))
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_from = re.search(
        r"Resuming training from checkpoint with epoch \d+ and global step (\d+)", result.stdout + result.stderr
    )
    assert resumed_from is not None and 2 <= int(resumed_from[1]) < 8, (result.stdout + result.stderr)[-5000:]
    a, b = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    targets = [
        torch.load(run / "checkpoint-8" / "gradient_surgery.pt", weights_only=True)["phi_hat"]
        for run in (full, killed)
    ]
    assert (targets[0] != 0).any()
    torch.testing.assert_close(targets[1], targets[0], rtol=0, atol=1e-9)

    # One safetensors file with the model's own remote code, loaded by a plain single process.
    assert sorted(path.name for path in full.glob("*.safetensors*")) == ["model.safetensors"]
    assert sorted(path.name for path in full.glob("*.py")) == [
        "configuration_bert_pals.py", "modeling_bert_pals.py", "pipeline_bert_pals.py",
    ]  # fmt: skip
    script = (
        "import sys, torch\n"
        "from safetensors.torch import load_file\n"
        "from transformers import AutoModel\n"
        "model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "assert 'modeling_bert_pals' not in sys.modules, 'the repository code was imported'\n"
        "assert type(model).__module__.startswith('transformers_modules.'), type(model).__module__\n"
        "saved = load_file(sys.argv[1] + '/model.safetensors')\n"
        "state = model.state_dict()\n"
        "assert saved.keys() == state.keys()\n"
        "assert all(torch.equal(state[name], saved[name]) for name in saved)\n"
        "ids = torch.tensor([[101, 2023, 2003, 102]])\n"
        "print('loaded', type(model).__name__, model(task='sst', input_ids=ids).logits.shape)\n"
    )
    env = {key: value for key, value in ENV.items() if key != "PYTHONPATH"}
    loaded = subprocess.run([sys.executable, "-c", script, str(full)], cwd=tmp_path, env=env, capture_output=True,
                            text=True)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "loaded BertPalsForMultitask torch.Size([1, 5])" in loaded.stdout


def bench_worker(tmp_path, minilm_path, name, fsdp_config=None):
    """One configuration of benchmarks/bench_fsdp.py on 2 processes: what each process held and called in a step."""
    out = tmp_path / name
    out.mkdir()
    command = ["benchmarks/bench_fsdp.py", "--worker", "--size", "tiny", "--steps", "2", "--tokenizer", minilm_path,
               "--out", str(out)] + (["--fsdp_config", json.dumps(fsdp_config)] if fsdp_config else [])  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *command],
        cwd=REPO, env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


def calls(report, kind):
    return [size for called, size in report["last_step"] if called == kind]


@pytest.mark.slow
def test_fsdp_step_communicates_gradient_shards_and_a_small_gramian(tmp_path, minilm_path):
    """
    Counted from the collectives each process calls during a GradVac step (a dispatch mode sees every c10d op): DDP
    surgery all-reduces the 3 full task rows; FSDP2 with `reshard_after_forward: false` reduce-scatters each task's
    gradient, gathers the parameters once (4 FSDP units: embeddings, 2 layers, root) and all-reduces nothing but the
    3 x 3 float64 Gramian, while each process holds half the task rows.
    """
    ddp = bench_worker(tmp_path, minilm_path, "ddp")
    fsdp = bench_worker(tmp_path, minilm_path, "fsdp", {"reshard_after_forward": False})
    shared = ddp[0]["shared"]
    for report in ddp:
        assert report["rows"] == [3, shared] and not report["fsdp"]
        assert 3 * shared * 4 in calls(report, "all-reduce")
        assert not calls(report, "reduce-scatter") and not calls(report, "all-gather")
    assert fsdp[0]["rows"][1] + fsdp[1]["rows"][1] == shared
    for report in fsdp:
        assert report["fsdp"] and report["rows"][0] == 3 and report["rows"][1] < 0.6 * shared
        assert calls(report, "all-reduce") == [3 * 3 * 8]
        assert len(calls(report, "reduce-scatter")) == 3 * 4 and len(calls(report, "all-gather")) == 4
        # Each task's backward reduce-scatters the shared gradient (and its own PALs and head) once.
        assert 3 * shared * 4 <= sum(calls(report, "reduce-scatter")) < 3 * 1.1 * shared * 4
        assert sum(calls(report, "all-gather")) < 1.1 * shared * 4
