# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import tiny_config
from transformers import AutoConfig, AutoModel, BertConfig, BertModel

from modeling_bert_pals import BertPalsConfig, BertPalsForMultitask, BertPalsModel


def random_pair_batch(vocab_size=99, batch=4, length=7, length_b=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch, length), generator=generator)
    ids_b = torch.randint(1, vocab_size, (batch, length_b), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    return dict(input_ids=ids, attention_mask=mask, input_ids_b=ids_b, attention_mask_b=torch.ones_like(ids_b))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pal_size=10, pal_num_heads=3), "multiple of pal_num_heads"),
        (dict(sts_head="bilinear"), "sts_head"),
        (dict(pooling="max"), "pooling"),
        (dict(tasks={}), "empty"),
        (dict(tasks={"sst": {"kind": "ranking"}}), "kind"),
        (dict(pal_decoder_init="uniform"), "pal_decoder_init"),
    ],
)
def test_config_rejects_invalid_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BertPalsConfig(**kwargs)


def test_config_defaults_are_the_papers():
    config = BertPalsConfig()
    assert (config.pal_size, config.pal_num_heads, config.classifier_dropout) == (204, 6, 0.3)
    assert config.task_names == ["sst", "para", "sts"]
    assert config.tasks["sst"]["num_labels"] == 5 and config.tasks["sts"]["kind"] == "pair_regression"


def test_minilm_hidden_states_equal_bert_for_every_task(minilm_path):
    """At initialisation (zero V^D) the PAL model computes exactly what the loaded BERT computes."""
    bert = BertModel.from_pretrained(minilm_path).eval()
    pals = BertPalsModel.from_pretrained(minilm_path).eval()
    ids = torch.randint(1000, 20000, (3, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    with torch.no_grad():
        expected = bert(ids, attention_mask=mask, output_hidden_states=True)
        for task in [None, "sst", "para", "sts"]:
            out = pals(ids, attention_mask=mask, task=task, output_hidden_states=True)
            assert len(out.hidden_states) == len(expected.hidden_states) == 7
            for ours, theirs in zip(out.hidden_states, expected.hidden_states):
                assert (ours - theirs).abs().max().item() <= 1e-5
            assert (out.pooler_output - expected.pooler_output).abs().max().item() <= 1e-5


def test_pals_change_the_output_once_trained():
    torch.manual_seed(0)
    model = BertPalsModel(tiny_config(pal_decoder_init="normal")).eval()
    ids = torch.randint(1, 99, (2, 6))
    with torch.no_grad():
        base = model(ids).last_hidden_state
        assert not torch.allclose(model(ids, task="sst").last_hidden_state, base)
        assert not torch.allclose(model(ids, task="sst").last_hidden_state, model(ids, task="sts").last_hidden_state)
        without = BertPalsModel(tiny_config(use_pals=False)).eval()
        without.load_state_dict(model.state_dict(), strict=False)
        assert torch.equal(without(ids, task="sst").last_hidden_state, base)


def test_from_bert_checkpoint_loads_every_bert_weight_and_reports_no_expected_missing_weight(minilm_path):
    """PAL and head weights are what a BERT checkpoint cannot have: they are created, not reported as missing."""
    model, info = BertPalsForMultitask.from_pretrained(
        minilm_path, pal_size=48, pal_num_heads=6, output_loading_info=True
    )
    assert model.config.pal_size == 48
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    bert = BertModel.from_pretrained(minilm_path).state_dict()
    ours = model.bert.state_dict()
    for key, value in bert.items():
        assert torch.equal(ours[key], value), f"{key} is a BERT weight that did not load"
    assert all(model.parameter_task(f"bert.{key}") is not None for key in ours.keys() - bert.keys())


@pytest.mark.parametrize("sts_head", ["linear", "cosine"])
def test_task_loss_gives_zero_gradient_to_other_tasks(sts_head):
    torch.manual_seed(0)
    model = BertPalsForMultitask(tiny_config(sts_head=sts_head, pal_decoder_init="normal"))
    batch = random_pair_batch()
    labels = {
        "sst": torch.tensor([0, 4, 2, 1]),
        "para": torch.tensor([0, 1, 1, 0]),
        "sts": torch.tensor([0.0, 5.0, 2.5, 1.0]),
    }
    names, parameters = zip(*model.named_parameters())
    for task in model.config.task_names:
        inputs = dict(batch) if task != "sst" else {k: v for k, v in batch.items() if not k.endswith("_b")}
        loss = model(task=task, labels=labels[task], **inputs).loss
        grads = torch.autograd.grad(loss, parameters, allow_unused=True)
        for name, grad in zip(names, grads):
            owner = model.parameter_task(name)
            if owner == task:
                assert grad is not None and grad.abs().sum() > 0, f"{name} gets no gradient from its own task"
            elif owner is not None:
                assert grad is None or torch.count_nonzero(grad) == 0, f"{task} loss reaches {name}"
        shared = [g for n, g in zip(names, grads) if model.parameter_task(n) is None and g is not None]
        assert any(g.abs().sum() > 0 for g in shared)


def test_shared_and_task_parameters_partition_the_model():
    model = BertPalsForMultitask(tiny_config(sts_head="linear"))
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(t)} for t in model.config.task_names]
    assert sum(len(s) for s in per_task) + len(shared) == len(list(model.parameters()))
    assert all(not (s & shared) for s in per_task)
    with pytest.raises(ValueError, match="Unknown task"):
        model.task_parameters("qnli")


def test_parameter_count_bert_base_three_tasks():
    """The added count equals the closed form; the original code's per-task figure for bert-base is 1,819,836."""
    config = BertPalsConfig(sts_head="linear")  # bert-base sized, random init
    with torch.device("meta"):
        model = BertPalsForMultitask(config)
        bert = BertModel(BertConfig())
    h, p, layers = config.hidden_size, config.pal_size, config.num_hidden_layers
    per_task_pals = (h * p + p) + (p * h + h) + layers * 3 * (p * p + p)
    assert per_task_pals == 1_819_836
    heads = (h * 5 + 5) + (2 * h * 2 + 2) + (2 * h + 1)
    n_bert = sum(t.numel() for t in bert.parameters())
    n_model = sum(t.numel() for t in model.parameters())
    assert n_model - n_bert == 3 * per_task_pals + heads
    for task in config.task_names:
        n_pals = sum(t.numel() for name, t in model.named_task_parameters(task) if not name.startswith("heads."))
        assert n_pals == per_task_pals
    print(
        f"bert-base {n_bert:,}; with 3 tasks' PALs and heads {n_model:,} "
        f"(+{n_model - n_bert:,}, {n_model / n_bert:.4f}x)"
    )


def test_forward_outputs_and_losses():
    torch.manual_seed(0)
    model = BertPalsForMultitask(tiny_config(sts_head="linear")).eval()
    batch = random_pair_batch()
    sst = model(task="sst", input_ids=batch["input_ids"], labels=torch.tensor([0, 1, 2, 3]))
    assert sst.logits.shape == (4, 5) and sst.loss.ndim == 0
    sts = model(task="sts", labels=torch.tensor([0.0, 1.0, 2.0, 5.0]), **batch)
    assert sts.logits.shape == (4,) and (sts.logits >= 0).all() and (sts.logits <= 5).all()
    para = model(task="para", **batch)
    assert para.logits.shape == (4, 2) and para.loss is None
    with pytest.raises(ValueError, match="pair task"):
        model(task="para", input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match="Unknown task"):
        model(task="qnli", input_ids=batch["input_ids"])


def test_pair_encoding_equals_separate_encoding():
    """Both sentences of a pair go through one batched pass; each must be encoded as if alone."""
    torch.manual_seed(0)
    for pooling in ["pooler", "mean"]:
        model = BertPalsForMultitask(tiny_config(pooling=pooling, pal_decoder_init="normal")).eval()
        batch = random_pair_batch()
        with torch.no_grad():
            out = model(task="sts", **batch)
            u = model.embed(batch["input_ids"], batch["attention_mask"], task="sts")
            v = model.embed(batch["input_ids_b"], batch["attention_mask_b"], task="sts")
        torch.testing.assert_close(out.embeddings, u, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.embeddings_b, v, atol=1e-5, rtol=1e-5)
        expected = torch.relu(torch.cosine_similarity(u, v)) * 5
        torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_pals", [True, False])
@pytest.mark.parametrize("pooling", ["pooler", "mean"])
def test_training_on_packed_tokens_equals_the_padded_batch(use_pals, pooling):
    """In training the layers run on the real tokens only (`pack_tokens`): the same losses, embeddings and gradients
    as the padded computation (dropout off so that both are deterministic)."""
    results = {}
    for pack_tokens in (True, False):
        torch.manual_seed(0)
        config = tiny_config(
            use_pals=use_pals,
            pooling=pooling,
            pal_decoder_init="normal",
            pack_tokens=pack_tokens,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            classifier_dropout=0.0,
        )
        model = BertPalsForMultitask(config).train()
        batch = random_pair_batch(length=9, length_b=6)
        batch["attention_mask_b"][1:, 3:] = 0
        sst = model(
            task="sst",
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=torch.tensor([0, 1, 2, 3]),
        )
        sts = model(task="sts", labels=torch.tensor([0.0, 1.0, 2.0, 5.0]), **batch)
        (sst.loss + sts.loss).backward()
        results[pack_tokens] = (
            sst.loss,
            sts.embeddings,
            sts.embeddings_b,
            {n: p.grad for n, p in model.named_parameters()},
        )
    packed, padded = results[True], results[False]
    for a, b in zip(packed[:3], padded[:3]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    for name, grad in padded[3].items():
        if grad is None:
            assert packed[3][name] is None, name
        else:
            torch.testing.assert_close(packed[3][name], grad, atol=1e-6, rtol=1e-5, msg=f"{name} differs")


def test_packed_tokens_only_in_training_without_layer_outputs():
    torch.manual_seed(0)
    model = BertPalsForMultitask(tiny_config())
    mask = random_pair_batch()["attention_mask"]
    assert model.train().bert._packs_tokens(mask, {})
    assert not model.bert._packs_tokens(torch.ones_like(mask), {})  # nothing to skip
    assert not model.bert._packs_tokens(mask, {"output_hidden_states": True})
    assert not model.eval().bert._packs_tokens(mask, {})


def test_remote_code_round_trip_in_a_fresh_process(tmp_path):
    """save_pretrained writes safetensors, both code files and auto_map; a fresh offline process without the
    package loads the same model through AutoModel with trust_remote_code."""
    torch.manual_seed(0)
    model = BertPalsForMultitask(tiny_config(pal_decoder_init="normal", sts_head="linear")).eval()
    model.save_pretrained(tmp_path / "model")
    files = set(os.listdir(tmp_path / "model"))
    assert {"config.json", "model.safetensors", "modeling_bert_pals.py", "configuration_bert_pals.py"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model_type"] == "bert_pals"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_bert_pals.BertPalsConfig",
        "AutoModel": "modeling_bert_pals.BertPalsForMultitask",
    }
    batch = random_pair_batch()
    torch.save(batch, tmp_path / "batch.pt")
    with torch.no_grad():
        expected = {task: model(task=task, **batch).logits for task in ["para", "sts"]}
    script = textwrap.dedent(
        f"""
        import sys, torch
        # As on a machine without this package (here it is installed): the saved code files must stand alone.
        sys.modules["modeling_bert_pals"] = None
        from transformers import AutoConfig, AutoModel
        config = AutoConfig.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "BertPalsForMultitask" and config.pal_size == 12
        batch = torch.load({str(tmp_path / "batch.pt")!r}, weights_only=True)
        with torch.no_grad():
            out = {{task: model(task=task, **batch).logits for task in ["para", "sts"]}}
        torch.save(out, {str(tmp_path / "out.pt")!r})
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    # Run from an empty directory with the repository off sys.path, so only the saved code can be used.
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True)
    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    for task in expected:
        torch.testing.assert_close(loaded[task], expected[task], rtol=0, atol=1e-6)


def test_auto_classes_in_process(tmp_path):
    model = BertPalsForMultitask(tiny_config())
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), BertPalsConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), BertPalsForMultitask)
