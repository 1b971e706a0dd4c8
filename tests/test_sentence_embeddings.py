# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""A bi-encoded task's encoder, with its PALs, exported for sentence-transformers and loaded in a fresh process."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import tiny_config
from transformers import AutoTokenizer

import export_sentence_transformer
from modeling_bert_pals import BertPalsForMultitask
from trainer.tasks import get_task


pytest.importorskip("sentence_transformers", reason="the `embeddings` extra: pip install -e '.[embeddings]'")
pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = ["A man is playing a guitar.", "Someone plays guitar on a small stage tonight.", "ok"]


def saved_model(path, tokenizer, **options):
    tasks = {name: get_task(name).head_spec() for name in ("sst", "para", "sts")}
    tasks["para"]["encoding"] = "cross"
    torch.manual_seed(0)
    config = tiny_config(vocab_size=tokenizer.vocab_size, tasks=tasks, **options)
    model = BertPalsForMultitask(config).eval()
    with torch.no_grad():  # a large V^D (it starts at zero): the PALs move the embeddings far beyond the tolerance
        for weight in model.bert.encoder.pal_decoders.parameters():
            weight.normal_(0.0, 0.5)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


@pytest.mark.parametrize("pooling", ["pooler", "mean"])
def test_sentence_transformers_encodes_what_the_task_head_reads(tiny_checkpoint, tmp_path, pooling):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    model = saved_model(tmp_path / "model", tokenizer, pooling=pooling)
    assert export_sentence_transformer.main([str(tmp_path / "model"), "--task", "sts", "--output_dir",
                                             str(tmp_path / "st")]) == 0  # fmt: skip
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.embed(batch.input_ids, batch.attention_mask, batch.token_type_ids, task="sts")
        without_pals = model.embed(batch.input_ids, batch.attention_mask, batch.token_type_ids, task=None)
        a, b = (tokenizer(s, return_tensors="pt") for s in SENTENCES[:2])
        score = model(task="sts", **a, **{f"{key}_b": value for key, value in b.items()}).logits.item()
    assert (expected - without_pals).abs().max() > 1e-2  # the task's PALs matter

    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.modules["modeling_bert_pals"] = sys.modules["trainer"] = None  # the exported code files alone
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer({str(tmp_path / "st")!r}, trust_remote_code=True)
        embeddings = model.encode({SENTENCES!r}, convert_to_tensor=True, batch_size=2)
        similarity = model.similarity(embeddings[:1], embeddings[1:2])
        torch.save({{"embeddings": embeddings, "similarity": similarity, "class": type(model[0].model).__name__}},
                   {str(tmp_path / "out.pt")!r})
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    (tmp_path / "elsewhere").mkdir()
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path / "elsewhere", env=env, check=True)
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["class"] == "BertPalsForSentenceEmbedding"
    torch.testing.assert_close(out["embeddings"], expected, atol=1e-5, rtol=0)
    # The cosine head's score is ReLU(cosine) x 5 of these embeddings.
    assert max(out["similarity"].item(), 0.0) * 5 == pytest.approx(score, abs=1e-4)


def test_only_a_task_whose_pairs_are_encoded_separately_exports(tiny_checkpoint, tmp_path, capsys):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    model = saved_model(tmp_path / "model", tokenizer)
    for task, reads in (("para", "a pair as one sequence"), ("sst", "one sentence")):
        with pytest.raises(ValueError, match=f"Task '{task}' reads {reads}.*encoded separately: \\['sts'\\]"):
            export_sentence_transformer.sentence_encoder(model, task)
    assert export_sentence_transformer.main([str(tmp_path / "model"), "--task", "qnli", "--output_dir",
                                             str(tmp_path / "st")]) == 1  # fmt: skip
    assert "Unknown task 'qnli'; this model has tasks" in capsys.readouterr().err
    assert not (tmp_path / "st").exists()
