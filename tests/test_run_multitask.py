# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""run_multitask.py end to end on the real data, with a tiny BERT checkpoint: presets, predictions, and a real
2-process run (torchrun, gloo) that computes what one process computes on the union of the batches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SAME_TRAINING_TOLERANCE, SHORT_RUN, tiny_args, tiny_config
from safetensors.torch import load_file
from transformers import BertModel

import plot_multitask
import run_multitask
from modeling_bert_pals import BertPalsForMultitask
from trainer.cs224n_builder import load_cs224n
from trainer.model_card import build_model_card
from trainer.predictions import read_predictions
from trainer.training_args import MultitaskTrainingArguments


REPO = Path(__file__).resolve().parents[1]


def test_presets_and_explicit_flags(tiny_checkpoint, data_dir, tmp_path):
    model_args, _, training_args = run_multitask.parse_args(
        tiny_args(tiny_checkpoint, data_dir, tmp_path, "--preset", "combined", "--gradvac_beta", "0.5")
    )
    assert (model_args.use_pals, model_args.sts_head) == (True, ["cosine"])
    assert (training_args.gradient_surgery, training_args.gradvac_beta) == ("gradvac", 0.5)
    _, _, training_args = run_multitask.parse_args(
        tiny_args(tiny_checkpoint, data_dir, tmp_path, "--preset", "baseline", "--learning_rate", "0.01")
    )
    assert training_args.freeze_encoder and training_args.task_schedule == "sequential"
    assert training_args.learning_rate == 0.01  # the explicit flag beats the preset's 1e-3
    config = tmp_path / "config.yaml"
    config.write_text(f"preset: pals\nmodel_name_or_path: {tiny_checkpoint}\noutput_dir: {tmp_path}\npal_size: 12\n")
    model_args, _, training_args = run_multitask.parse_args([str(config)])
    assert model_args.use_pals and model_args.pal_size == 12 and training_args.task_schedule == "round_robin"
    with pytest.raises(ValueError, match="--preset 'fastest' is not one of"):
        run_multitask.parse_args(tiny_args(tiny_checkpoint, data_dir, tmp_path, "--preset", "fastest"))
    with pytest.raises(ValueError, match="--gradient_surgery 'graddrop' is not one of"):
        run_multitask.parse_args(tiny_args(tiny_checkpoint, data_dir, tmp_path, "--gradient_surgery", "graddrop"))
    with pytest.raises(ValueError, match="unknown task 'qnli'"):
        run_multitask.main(tiny_args(tiny_checkpoint, data_dir, tmp_path, "--tasks", "sst", "qnli"))


def test_train_evaluate_predict_and_model_card(tiny_checkpoint, data_dir, tmp_path):
    run_multitask.main(
        tiny_args(
            tiny_checkpoint, data_dir, tmp_path, *SHORT_RUN, "--preset", "combined", "--logging_steps", "1",
            "--eval_strategy", "steps", "--eval_steps", "1",
        )
    )  # fmt: skip
    results = json.loads((tmp_path / "all_results.json").read_text())
    for key in ("eval_sst_accuracy", "eval_para_accuracy", "eval_sts_pearson", "eval_overall", "train_loss"):
        assert key in results
    overall = (results["eval_sst_accuracy"] + results["eval_para_accuracy"] + results["eval_sts_pearson"]) / 3
    assert results["eval_overall"] == pytest.approx(overall)
    # The CS224N leaderboard's score beside it (the paper's mean stays the metric that picks the best checkpoint).
    leaderboard = (
        results["eval_sst_accuracy"] + results["eval_para_accuracy"] + (results["eval_sts_pearson"] + 1) / 2
    ) / 3
    assert results["eval_leaderboard"] == pytest.approx(leaderboard)

    # Every id of every dev and test-student file exactly once, in the course's format.
    expected = {("sst", "dev"), ("sst", "test"), ("para", "dev"), ("sts", "dev"), ("sts", "test")}
    written = {tuple(p.name.split("-")[:2]) for p in (tmp_path / "predictions").iterdir()}
    assert written == expected  # there is no quora test-student file in the data
    for task, split in expected:
        path = tmp_path / "predictions" / f"{task}-{split}-output.csv"
        lines = path.read_text().splitlines()
        predictions = read_predictions(path)
        dataset = load_cs224n(task, data_dir)["validation" if split == "dev" else "test"]
        assert len(lines) - 1 == len(predictions) == len(dataset)
        assert sorted(predictions) == sorted(dataset["id"])
        if task == "sts":
            assert all(0.0 <= float(v) <= 5.0 for v in predictions.values())
        else:
            assert set(predictions.values()) <= {str(i) for i in range(5 if task == "sst" else 2)}

    card = (tmp_path / "README.md").read_text()
    assert "model-index" in card and "preset `combined`" in card and "eval_overall" not in card
    assert f"{results['eval_overall']:.4f}" in card and f"{results['eval_leaderboard']:.4f}**" in card
    # The training time and what it was measured on; no pre-training note for a checkpoint without one.
    assert (
        f"{results['train_runtime'] / 60:.1f} minutes (`train_runtime` of the last `train()` call, which ended at "
        "step 2;" in card
    )
    assert f"earlier attempts are not in it) on {torch.get_num_threads()} CPU" in card
    assert "pre-trained on data that include" not in card
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "bert_pals" and saved["sts_head"] == "cosine" and saved["use_pals"]
    assert (tmp_path / "modeling_bert_pals.py").is_file() and (tmp_path / "model.safetensors").is_file()

    plots = plot_multitask.main([str(tmp_path)])
    assert [p.name for p in plots] == ["dev_metrics.png", "losses.png", "conflicts.png", "grad_norms.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots)
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    adjustments = plot_multitask.per_epoch(history, plot_multitask.ADJUSTMENTS, reduce="sum")
    assert set(adjustments) == {f"{a}-{b}" for a in ("sst", "para", "sts") for b in ("sst", "para", "sts") if a != b}


def test_the_model_card_of_all_minilm_says_it_saw_quora_beside_the_quora_result(tmp_path):
    model = BertPalsForMultitask(tiny_config())
    args = MultitaskTrainingArguments(output_dir=str(tmp_path / "best-seed0"), report_to="none")
    metrics = {"eval_para_accuracy": 0.83, "eval_overall": 0.7}
    note = "Quora paraphrase: sentence-transformers/all-MiniLM-L6-v2 was pre-trained on data that include this task's"
    card = str(build_model_card(model, args, metrics, base_model="sentence-transformers/all-MiniLM-L6-v2"))
    assert note in card and "| Quora paraphrase |" in card and "Training time" not in card
    assert note not in str(build_model_card(model, args, metrics, base_model="bert-base-uncased"))


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["naive"])  # every method: test_methods_on_processes.py
def test_two_processes_equal_one_process_on_the_union(tiny_checkpoint, data_dir, tmp_path, preset):
    """Summed losses (naive), gradient accumulation 2, 3 optimizer steps: torchrun with 2 processes (gloo) and batch 2
    per task and process, against one process with batch 4."""
    common = [
        "--preset", preset, "--do_train", "--max_train_samples", "48", "--max_steps", "3",
        "--gradient_accumulation_steps", "2", "--optim", "sgd", "--learning_rate", "0.05",
        "--lr_scheduler_type", "constant", "--save_strategy", "no", "--gradvac_beta", "0.5", "--log_level",
        "info",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = tmp_path / "one"
    subprocess.run(
        [
            sys.executable,
            "run_multitask.py",
            *tiny_args(tiny_checkpoint, data_dir, one, *common, "--per_device_train_batch_size", "4"),
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    two = tmp_path / "two"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "run_multitask.py",
            *tiny_args(tiny_checkpoint, data_dir, two, *common, "--per_device_train_batch_size", "2"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    # Two real processes: 2 per device x 2 processes x 2 accumulation steps.
    assert "Instantaneous batch size per device = 2" in log
    assert "Total train batch size (w. parallel, distributed & accumulation) = 8" in log
    assert json.loads((two / "trainer_state.json").read_text())["global_step"] == 3
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    initial = {f"bert.{k}": v for k, v in BertModel.from_pretrained(tiny_checkpoint).state_dict().items()}
    update = max((a[k] - initial[k]).abs().max().item() for k in a if k in initial)
    difference = max((a[k] - b[k]).abs().max().item() for k in a)
    # Float32 rounding apart (see SAME_TRAINING_TOLERANCE), the same training.
    print(f"largest update of a shared weight {update:.2e}, largest difference between the runs {difference:.2e}")
    assert update > 1e-3
    assert difference < SAME_TRAINING_TOLERANCE * update
