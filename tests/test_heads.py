# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""The task heads and their losses: shapes, finite losses, gradients only where they belong, the loss formulas, and
a cross-encoded pair task through run_multitask.py (training, evaluation, prediction files, remote-code reload)."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import SHORT_RUN, tiny_args, tiny_config

import run_multitask
from modeling_bert_pals import BertPalsForMultitask
from modeling_bert_pals.modeling_bert_pals import (
    CosineSimilarityHead,
    CrossEncoderClassificationHead,
    CrossEncoderRegressionHead,
    PairClassificationHead,
    PairRegressionHead,
    SentenceClassificationHead,
    cosent_loss,
    ranking_loss,
)
from trainer.cs224n_builder import load_cs224n
from trainer.predictions import read_predictions


# Head options of `config.tasks`, the STS head, and the head classes they give to (sst, para, sts).
VARIANTS = {
    "paper-linear": ({}, {}, "linear", (PairClassificationHead, PairRegressionHead)),
    "paper-cosine": ({}, {}, "cosine", (PairClassificationHead, CosineSimilarityHead)),
    "sbert-ranking-cosent": (
        {"features": "sbert", "loss": "cross_entropy+ranking"},
        {"features": "sbert", "loss": "cosent"},
        "linear",
        (PairClassificationHead, PairRegressionHead),
    ),
    "cosine-cosent": (
        {"loss": "cross_entropy+ranking"},
        {"loss": "cosent"},
        "cosine",
        (PairClassificationHead, CosineSimilarityHead),
    ),
    "cross": (
        {"encoding": "cross"},
        {"encoding": "cross", "loss": "cosent"},
        "cosine",
        (CrossEncoderClassificationHead, CrossEncoderRegressionHead),
    ),
    # The regularisers: label smoothing changes the loss also in evaluation; R-Drop acts in training only.
    "cross-regularised": (
        {"encoding": "cross", "label_smoothing": 0.2, "rdrop": 1.0},
        {"rdrop": 0.5},
        "cosine",
        (CrossEncoderClassificationHead, CosineSimilarityHead),
    ),
}


def variant_model(name, use_pals=True):
    para, sts, sts_head, _ = VARIANTS[name]
    tasks = {
        "sst": {"kind": "classification", "num_labels": 5},
        "para": {"kind": "pair_classification", "num_labels": 2, **para},
        "sts": {"kind": "pair_regression", "num_labels": 1, **sts},
    }
    torch.manual_seed(0)
    return BertPalsForMultitask(
        tiny_config(tasks=tasks, sts_head=sts_head, use_pals=use_pals, pal_decoder_init="normal")
    )


def batch_for(model, task, batch_size=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 99, (batch_size, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if model.heads[task].encoding == "separate":
        batch["input_ids_b"] = torch.randint(1, 99, (batch_size, 5), generator=generator)
        batch["attention_mask_b"] = torch.ones_like(batch["input_ids_b"])
    if model.heads[task].is_regression:
        batch["labels"] = torch.rand(batch_size, generator=generator) * 5
    else:
        num_labels = model.config.tasks[task]["num_labels"]
        batch["labels"] = torch.arange(batch_size) % num_labels  # every class, and in para 3 positive pairs
    return batch


@pytest.mark.parametrize("name", list(VARIANTS))
def test_heads_give_shapes_finite_losses_and_gradients_only_to_their_task(name):
    model = variant_model(name)
    expected_classes = (SentenceClassificationHead, *VARIANTS[name][3])
    assert tuple(type(model.heads[task]) for task in ("sst", "para", "sts")) == expected_classes
    for task in ("sst", "para", "sts"):
        model.zero_grad(set_to_none=True)
        batch = batch_for(model, task)
        output = model(task=task, **batch)
        head = model.heads[task]
        expected_shape = (6,) if head.is_regression else (6, model.config.tasks[task]["num_labels"])
        assert output.logits.shape == expected_shape
        assert output.loss.dim() == 0 and torch.isfinite(output.loss)
        assert head.predictions(output.logits).shape == (6,)
        output.loss.backward()
        for other in ("sst", "para", "sts"):
            grads = [p.grad for p in model.task_parameters(other)]
            if other == task:
                assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{task}: no gradient of its own"
            else:
                assert all(g is None or not g.any() for g in grads), f"{task}'s loss reached {other}'s parameters"
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shared_parameters())


def test_cosent_equals_its_formula():
    similarities = torch.tensor([0.2, 0.4, 0.5, 0.1, 0.3])  # some pairs in the wrong order
    labels = torch.tensor([4.0, 1.0, 2.5, 0.0, 2.5])
    total = 1.0
    for i in range(5):
        for j in range(5):
            if labels[i] > labels[j]:
                total += math.exp(20 * (similarities[j] - similarities[i]))
    assert cosent_loss(similarities, labels).item() == pytest.approx(math.log(total), rel=1e-6)
    # Only the order of the labels matters, and a perfect order with a wide margin costs almost nothing.
    assert cosent_loss(similarities, labels * 3 + 1).item() == pytest.approx(math.log(total), rel=1e-6)
    assert cosent_loss(torch.tensor([1.0, 0.0]), torch.tensor([5.0, 0.0])).item() < 1e-8


def test_ranking_loss_equals_its_formula():
    generator = torch.Generator().manual_seed(0)
    anchors, candidates = torch.randn(3, 4, generator=generator), torch.randn(5, 4, generator=generator)
    expected = 0.0
    for i in range(3):
        scores = [20 * torch.nn.functional.cosine_similarity(anchors[i], c, dim=0).item() for c in candidates]
        expected += -(scores[i] - math.log(sum(math.exp(s) for s in scores))) / 3
    assert ranking_loss(anchors, candidates).item() == pytest.approx(expected, rel=1e-5)


def test_paraphrase_ranking_loss_is_cross_entropy_plus_ranking_over_the_positive_pairs():
    model = variant_model("sbert-ranking-cosent").eval()
    batch = batch_for(model, "para")
    output = model(task="para", **batch)
    positives = batch["labels"] == 1
    cross_entropy = torch.nn.functional.cross_entropy(output.logits, batch["labels"])
    u, v = output.embeddings, output.embeddings_b
    ranking = ranking_loss(u[positives], torch.cat([v[positives], v[~positives]]))
    assert output.loss.item() == pytest.approx((cross_entropy + ranking).item(), rel=1e-6)
    # Without positive pairs only the cross-entropy is left.
    batch["labels"] = torch.zeros_like(batch["labels"])
    output = model(task="para", **batch)
    assert output.loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(output.logits, batch["labels"]).item(), rel=1e-6
    )


def test_cosent_on_the_cosine_head_ranks_the_raw_cosine():
    model = variant_model("cosine-cosent").eval()
    batch = batch_for(model, "sts")
    output = model(task="sts", **batch)
    cosine = torch.nn.functional.cosine_similarity(output.embeddings, output.embeddings_b, dim=-1)
    assert output.loss.item() == pytest.approx(cosent_loss(cosine, batch["labels"]).item(), rel=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"encoding": "cross", "features": "sbert"}, "separately encoded"),
        ({"encoding": "cross", "loss": "cross_entropy+ranking"}, "ranking loss"),
        ({"loss": "cosent"}, "loss 'cosent' is not one of"),
        ({"encoding": "joint"}, "encoding 'joint' is not one of"),
    ],
)
def test_invalid_head_options_are_refused(options, message):
    tasks = {"para": {"kind": "pair_classification", "num_labels": 2, **options}}
    with pytest.raises(ValueError, match=message):
        tiny_config(tasks=tasks)


def test_a_cross_encoder_rejects_a_second_sentence_input():
    model = variant_model("cross")
    batch = batch_for(model, "para")
    batch["input_ids_b"] = batch["input_ids"]
    with pytest.raises(ValueError, match="cross-encoder"):
        model(task="para", **batch)


def test_head_options_on_the_command_line(tiny_checkpoint, data_dir, tmp_path):
    def config_of(*flags):
        model_args, data_args, _ = run_multitask.parse_args(tiny_args(tiny_checkpoint, data_dir, tmp_path, *flags))
        return run_multitask.build_config(model_args, data_args.tasks)

    config = config_of("--pair_encoding", "cross", "--loss", "cosent", "para=cross_entropy")
    assert config.tasks["para"]["encoding"] == config.tasks["sts"]["encoding"] == "cross"
    assert config.tasks["sts"]["loss"] == "cosent" and config.tasks["para"]["loss"] == "cross_entropy"
    assert "encoding" not in config.tasks["sst"]  # a bare value goes only to the heads that take it
    config = config_of("--sts_head", "linear", "--pair_features", "sbert", "--pair_encoding", "sts=cross")
    assert config.tasks["para"]["features"] == "sbert" and "features" not in config.tasks["sts"]
    with pytest.raises(ValueError, match="--loss cosent: none of the tasks"):
        config_of("--tasks", "sst", "para", "--loss", "cosent")
    with pytest.raises(ValueError, match="--pair_encoding sst=cross: Task 'sst'"):
        config_of("--pair_encoding", "sst=cross")
    with pytest.raises(ValueError, match="'qnli' is not one of the tasks"):
        config_of("--loss", "qnli=mse")


@pytest.mark.slow
def test_cross_encoded_pairs_train_evaluate_predict_and_reload(tiny_checkpoint, data_dir, tmp_path):
    output_dir = tmp_path / "run"
    run_multitask.main(
        tiny_args(
            tiny_checkpoint,
            data_dir,
            output_dir,
            *SHORT_RUN,
            "--preset",
            "combined",
            "--pair_encoding",
            "cross",
            "--loss",
            "sts=cosent",
        )
    )
    results = json.loads((output_dir / "all_results.json").read_text())
    assert {"eval_sst_accuracy", "eval_para_accuracy", "eval_sts_pearson", "eval_overall"} <= set(results)
    saved = json.loads((output_dir / "config.json").read_text())
    assert saved["tasks"]["para"]["encoding"] == "cross" and saved["tasks"]["sts"]["loss"] == "cosent"
    for task, split, rows in (("para", "dev", "validation"), ("sts", "test", "test")):
        predictions = read_predictions(output_dir / "predictions" / f"{task}-{split}-output.csv")
        assert sorted(predictions) == sorted(load_cs224n(task, data_dir)[rows]["id"])
    card = (output_dir / "README.md").read_text()
    assert "CrossEncoderClassificationHead (encoding cross, loss cross_entropy)" in card
    assert "CrossEncoderRegressionHead (encoding cross, loss cosent)" in card

    # A fresh process without the package, and the repository off sys.path, loads it with the saved code only.
    from transformers import AutoTokenizer

    model = BertPalsForMultitask.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    batch = dict(
        tokenizer(["how do i learn python ?"], ["what is the best way to learn python ?"], return_tensors="pt")
    )
    with torch.no_grad():
        expected = {task: model(task=task, **batch).logits for task in ("para", "sts")}
    torch.save(batch, tmp_path / "batch.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.modules["modeling_bert_pals"] = None
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(output_dir)!r}, trust_remote_code=True).eval()
        batch = torch.load({str(tmp_path / "batch.pt")!r}, weights_only=True)
        with torch.no_grad():
            torch.save({{t: model(task=t, **batch).logits for t in ("para", "sts")}}, {str(tmp_path / "out.pt")!r})
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True)
    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    for task in ("para", "sts"):
        torch.testing.assert_close(loaded[task], expected[task])


def test_every_head_variant_reloads_with_remote_code(tmp_path):
    """Save each variant; a fresh process without the package reloads it with the saved code and gets the same
    logits and loss."""
    expected = {}
    for name in VARIANTS:
        model = variant_model(name).eval()
        model.save_pretrained(tmp_path / name)
        batches = {task: batch_for(model, task) for task in ("sst", "para", "sts")}
        torch.save(batches, tmp_path / f"{name}.pt")
        with torch.no_grad():
            expected[name] = {task: model(task=task, **batch) for task, batch in batches.items()}
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.modules["modeling_bert_pals"] = None
        from transformers import AutoModel
        out = {{}}
        for name in {list(VARIANTS)!r}:
            model = AutoModel.from_pretrained({str(tmp_path)!r} + "/" + name, trust_remote_code=True).eval()
            batches = torch.load({str(tmp_path)!r} + "/" + name + ".pt", weights_only=True)
            with torch.no_grad():
                out[name] = {{t: (model(task=t, **b).logits, model(task=t, **b).loss) for t, b in batches.items()}}
        torch.save(out, {str(tmp_path / "out.pt")!r})
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True)
    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    for name, outputs in expected.items():
        for task, output in outputs.items():
            torch.testing.assert_close(loaded[name][task][0], output.logits)
            torch.testing.assert_close(loaded[name][task][1], output.loss)
