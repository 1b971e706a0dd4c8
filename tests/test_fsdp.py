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

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel

from conftest import tiny_config
from modeling_bert_pals import BertPalsForMultitask


REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
# One FSDP unit per layer (and, as Accelerate does, one for the word embeddings), the root holding the rest.
FSDP_CONFIG = {"version": 2, "transformer_layer_cls_to_wrap": ["BertPalsLayer"], "reshard_after_forward": True}
SHARDS = re.compile(r"Process (\d) of 2: gradient rows (\d+) x ([\d,]+) .*parameters ([\d,]+) of ([\d,]+) entries")


def tiny_args(checkpoint, data_dir, output_dir, *extra):
    return [
        "--model_name_or_path", checkpoint, "--data_dir", str(data_dir), "--output_dir", str(output_dir),
        "--pal_size", "12", "--pal_num_heads", "3", "--pal_decoder_init", "normal", "--classifier_dropout", "0",
        "--report_to", "none", "--disable_tqdm", "True", "--seed", "0", "--dataloader_pin_memory", "False",
        "--preset", "combined", "--do_train", "--max_train_samples", "48", *extra,
    ]  # fmt: skip


def fsdp_args(tmp_path, **config):
    path = tmp_path / "fsdp_config.json"
    path.write_text(json.dumps({**FSDP_CONFIG, **config}))
    return ["--fsdp", "full_shard", "--fsdp_config", str(path), "--log_level", "info", "--log_level_replica", "info"]


def run_one(args):
    result = subprocess.run([sys.executable, "run_multitask.py", *args], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def torchrun(args, **kwargs):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run([*command, "run_multitask.py", *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          **kwargs)  # fmt: skip


def local_numel(shape, rank, world_size=2):
    """Entries of `rank`'s shard of a tensor of `shape` under FSDP2: chunks of its first dimension."""
    rows = torch.empty(shape[0]).chunk(world_size)
    return (rows[rank].numel() if rank < len(rows) else 0) * torch.Size(shape[1:]).numel()


def assert_each_process_held_its_shards(log, surgery, tmp_path):
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
@pytest.mark.parametrize("surgery", ["none", "pcgrad", "gradvac"])
def test_fsdp_two_processes_equal_one_process_on_the_union(tiny_checkpoint, data_dir, tmp_path, surgery):
    """PALs, heads, gradient accumulation 2, 3 optimizer steps: 2 FSDP2 processes with batch 2 per task and process
    against one process with batch 4; the tolerance of the DDP test (test_run_multitask.py)."""
    common = ["--gradient_surgery", surgery, "--max_steps", "3", "--gradient_accumulation_steps", "2", "--optim",
              "sgd", "--learning_rate", "0.05", "--lr_scheduler_type", "constant", "--save_strategy", "no",
              "--gradvac_beta", "0.5"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    run_one(tiny_args(tiny_checkpoint, data_dir, one, *common, "--per_device_train_batch_size", "4"))
    result = torchrun(tiny_args(tiny_checkpoint, data_dir, two, *common, "--per_device_train_batch_size", "2",
                                *fsdp_args(tmp_path)))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "FSDP2 on a CPU (gloo) process group" in log
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in log
    assert_each_process_held_its_shards(log, surgery, tmp_path)
    assert json.loads((two / "trainer_state.json").read_text())["global_step"] == 3

    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys()
    initial = {f"bert.{k}": v for k, v in BertModel.from_pretrained(tiny_checkpoint).state_dict().items()}
    update, difference = largest_differences(a, b, initial)
    print(f"{surgery}: largest update of a shared weight {update:.2e}, largest difference {difference:.2e}")
    assert update > 1e-3
    assert difference < 1e-5 and difference < 1e-2 * update
