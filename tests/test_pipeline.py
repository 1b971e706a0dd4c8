# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""The multitask pipeline: class names in the config, every input form, its errors, and in a fresh process outside
the repository the labels and scores of `run_multitask.py --do_predict`'s files."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import SHORT_RUN, tiny_args, tiny_config
from transformers import AutoTokenizer, pipeline

import run_multitask
from modeling_bert_pals import PIPELINE_TASK, BertPalsConfig, BertPalsForMultitask
from trainer.checkpoints import build_run_config
from trainer.cs224n_builder import load_cs224n
from trainer.predictions import read_predictions
from trainer.tasks import TASKS, fill_label_names, get_task


pytestmark = pytest.mark.usefixtures("one_thread")

SST_NAMES = ["very negative", "negative", "neutral", "positive", "very positive"]
PAIR = {"text": "How do I learn Python quickly?", "text_pair": "What is the fastest way to learn Python?"}


def tiny_pipeline(tokenizer, **para):
    """A random tiny model (sst, para with the given options, sts) behind the pipeline, in this process."""
    tasks = {name: get_task(name).head_spec() for name in ("sst", "para", "sts")}
    tasks["para"].update(para)
    torch.manual_seed(0)
    config = tiny_config(vocab_size=tokenizer.vocab_size, tasks=tasks, classifier_dropout=0.0)
    model = BertPalsForMultitask(config).eval()
    return pipeline(PIPELINE_TASK, model=model, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


def test_the_config_records_class_names_and_old_configs_fall_back_to_the_registry_then_to_ids():
    config = BertPalsConfig(tasks={name: get_task(name).head_spec() for name in ("sst", "para", "sts")})
    assert config.label_names("sst") == SST_NAMES and config.label_names("para") == ["not_duplicate", "duplicate"]
    assert config.score_range("sts") == (0.0, 5.0)
    reloaded = BertPalsConfig.from_dict(config.to_dict())
    assert reloaded.tasks["sst"]["label_names"] == SST_NAMES

    old = BertPalsConfig(
        tasks={"sst": {"kind": "classification", "num_labels": 5}, "mine": {"kind": "classification"}}
    )
    assert old.label_names("sst") == [f"LABEL_{i}" for i in range(5)] and old.label_names("mine") == ["LABEL_0"]
    fill_label_names(old)
    assert old.label_names("sst") == SST_NAMES and old.label_names("mine") == ["LABEL_0"]
    # A task of the registry's name but another number of classes keeps the ids.
    other = fill_label_names(BertPalsConfig(tasks={"sst": {"kind": "classification", "num_labels": 3}}))
    assert other.label_names("sst") == ["LABEL_0", "LABEL_1", "LABEL_2"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "classification", "num_labels": 2, "label_names": ["a"]}, "must be 2 distinct"),
        ({"kind": "classification", "num_labels": 2, "label_names": ["a", "a"]}, "must be 2 distinct"),
        ({"kind": "classification", "num_labels": 2, "label_names": "ab"}, "must be 2 distinct"),
        ({"kind": "pair_regression", "label_names": ["a"]}, "regression task: it has a score range"),
        ({"kind": "pair_regression", "max_score": 0}, "`max_score` must be a positive number"),
    ],
)
def test_bad_class_names_or_score_range_are_refused_naming_the_task(spec, message):
    with pytest.raises(ValueError, match=f"Task 'mine'.*{message}"):
        BertPalsConfig(tasks={"mine": spec})


def test_class_names_do_not_change_the_run_configuration():
    """A run resumed from a checkpoint written before the names were recorded is the same run."""
    with_names = BertPalsConfig(tasks={"sst": get_task("sst").head_spec()})
    without = BertPalsConfig(tasks={"sst": {"kind": "classification", "num_labels": 5}})
    assert build_run_config(with_names, None)["tasks"] == build_run_config(without, None)["tasks"]


@pytest.mark.parametrize("encoding", ["separate", "cross"])
def test_the_pipeline_gives_what_the_model_gives_for_every_input_form(tokenizer, encoding):
    pipe = tiny_pipeline(tokenizer, encoding=encoding)
    model = pipe.model
    sentences = ["I loved it", "A dull, overlong film that never finds its footing.", "ok"]
    with torch.no_grad():
        logits = model(task="sst", **tokenizer(sentences, padding=True, return_tensors="pt")).logits
        a, b = tokenizer(PAIR["text"], return_tensors="pt"), tokenizer(PAIR["text_pair"], return_tensors="pt")
        separate = dict(a, **{f"{key}_b": value for key, value in b.items()})
        joint = tokenizer(PAIR["text"], PAIR["text_pair"], return_tensors="pt")
        para = model(task="para", **(joint if encoding == "cross" else separate)).logits
        sts = model(task="sts", **separate).logits
    probabilities = logits.softmax(-1)

    single = pipe(sentences[0], task="sst")
    assert single["label"] == SST_NAMES[int(probabilities[0].argmax())]
    assert single["score"] == pytest.approx(probabilities[0].max().item(), abs=1e-6)
    batched = pipe(sentences, task="sst")  # one batch, padded
    assert [r["label"] for r in batched] == [SST_NAMES[i] for i in probabilities.argmax(-1).tolist()]
    assert [r["score"] for r in batched] == pytest.approx(probabilities.max(-1).values.tolist(), abs=1e-6)
    one_by_one = pipe(sentences, task="sst", batch_size=1)
    assert [r["label"] for r in one_by_one] == [r["label"] for r in batched]
    assert [r["score"] for r in one_by_one] == pytest.approx([r["score"] for r in batched], abs=1e-6)
    ranked = pipe(sentences[1], task="sst", top_k=None)
    assert [r["label"] for r in ranked] == [SST_NAMES[i] for i in probabilities[1].argsort(descending=True).tolist()]
    assert sum(r["score"] for r in ranked) == pytest.approx(1.0, abs=1e-5)
    assert pipe(sentences[1], task="sst", top_k=2) == ranked[:2]

    duplicate = pipe(PAIR, task="para")
    assert duplicate["label"] == ["not_duplicate", "duplicate"][int(para.argmax())]
    assert duplicate["score"] == pytest.approx(para.softmax(-1).max().item(), abs=1e-6)
    similarity = pipe([PAIR, PAIR], task="sts")
    assert [r["score"] for r in similarity] == pytest.approx([sts.item()] * 2, abs=1e-5)
    assert 0.0 <= similarity[0]["score"] <= 5.0

    # Without a task: every task that takes the input.
    assert set(pipe(sentences[0])) == {"sst"} and pipe(sentences[0])["sst"]["label"] == single["label"]
    both = pipe([PAIR])
    assert len(both) == 1 and set(both[0]) == {"para", "sts"}
    assert both[0]["sts"]["score"] == pytest.approx(sts.item(), abs=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda pipe: pipe("a sentence", task="qnli"), r"Unknown task 'qnli'; this model has tasks \['sst'"),
        (lambda pipe: pipe(PAIR, task="sst"), r"Task 'sst' takes one sentence \(a string\); got a dict"),
        (lambda pipe: pipe("one sentence", task="para"), r"Task 'para' takes a sentence pair \{\"text\""),
        (lambda pipe: pipe({"text": "a"}, task="sts"), r"Task 'sts' takes a sentence pair"),
        (lambda pipe: pipe(["a", PAIR], task="sst"), r"Task 'sst' takes one sentence"),
        (lambda pipe: pipe([], task="sst"), r"Task 'sst': got an empty list; pass one sentence"),
        (lambda pipe: pipe([]), r"Got an empty list"),
        (lambda pipe: pipe(["a", PAIR]), r"Without `task=`, pass only sentences or only sentence pairs"),
        (lambda pipe: pipe(PAIR, task="sts", top_k=2), r"Task 'sts' gives a score, not classes"),
        (lambda pipe: pipe("a", task="sst", top_k=0), r"top_k must be a positive int"),
        (lambda pipe: pipe("a", task="sst", max_length=10_000), r"max_length must be an int in \[3, 64\]"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_task_and_the_expected_input(tokenizer, call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny_pipeline(tokenizer))


def test_save_pretrained_registers_the_pipeline_and_ships_its_code(tokenizer, tmp_path):
    model = tiny_pipeline(tokenizer).model
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["custom_pipelines"] == {
        PIPELINE_TASK: {"impl": "pipeline_bert_pals.BertPalsMultitaskPipeline", "pt": ["AutoModel"], "type": "text"}
    }
    assert saved["tasks"]["sst"]["label_names"] == SST_NAMES
    assert (tmp_path / "pipeline_bert_pals.py").is_file()
    source = (tmp_path / "pipeline_bert_pals.py").read_text()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"torch", "transformers"}


PIPELINE_SCRIPT = """
import json, sys
sys.modules["modeling_bert_pals"] = sys.modules["trainer"] = None  # the saved code files alone
from transformers import pipeline
rows = json.load(open(sys.argv[1]))
out = {}
for preset, model_dir in rows["models"].items():
    pipe = pipeline(model=model_dir, trust_remote_code=True)
    out[preset] = {"class": type(pipe).__name__, "module": type(pipe).__module__}
    for key, inputs in rows["inputs"].items():
        out[preset][key] = pipe(inputs, task=key.split("/")[0])
json.dump(out, open(sys.argv[2], "w"))
"""


@pytest.mark.slow
def test_a_fresh_process_outside_the_repository_gets_the_prediction_files_from_the_pipeline(
    tiny_checkpoint, tiny_data, tmp_path
):
    """`best` (no PALs, Quora cross-encoded, STS bi-encoded) and `combined` (PALs, both pairs bi-encoded)."""
    models = {}
    for preset in ("best", "combined"):
        models[preset] = str(tmp_path / preset)
        run_multitask.main(tiny_args(tiny_checkpoint, tiny_data, models[preset], *SHORT_RUN, "--preset", preset))
    encodings = {p: json.loads((tmp_path / p / "config.json").read_text())["tasks"] for p in models}
    assert encodings["best"]["para"]["encoding"] == "cross" and encodings["combined"]["para"].get("encoding") is None
    assert json.loads((tmp_path / "combined" / "config.json").read_text())["use_pals"] is True

    inputs, expected = {}, {}
    for task in ("sst", "para", "sts"):
        splits = load_cs224n(task, tiny_data)
        for split, name in (("validation", "dev"), ("test", "test")):
            path = tmp_path / "best" / "predictions" / f"{task}-{name}-output.csv"
            if split not in splits:
                assert not path.exists()
                continue
            rows = splits[split]
            columns = TASKS[task].text_columns
            if len(columns) == 1:
                inputs[f"{task}/{name}"] = list(rows[columns[0]])
            else:
                inputs[f"{task}/{name}"] = [{"text": a, "text_pair": b} for a, b in zip(*(rows[c] for c in columns))]
            expected[f"{task}/{name}"] = list(rows["id"])
    (tmp_path / "rows.json").write_text(json.dumps({"models": models, "inputs": inputs}))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    subprocess.run(
        [sys.executable, "-c", PIPELINE_SCRIPT, str(tmp_path / "rows.json"), str(tmp_path / "out.json")],
        cwd=work,
        env=env,
        check=True,
    )
    results = json.loads((tmp_path / "out.json").read_text())
    for preset in models:
        assert results[preset]["class"] == "BertPalsMultitaskPipeline"
        assert results[preset]["module"].startswith("transformers_modules.")  # the saved file, not the repository's
        for key, ids in expected.items():
            task, name = key.split("/")
            predictions = read_predictions(tmp_path / preset / "predictions" / f"{task}-{name}-output.csv")
            got = results[preset][key]
            assert len(got) == len(ids) == len(predictions)
            if TASKS[task].is_regression:
                for example_id, result in zip(ids, got):
                    assert result["score"] == pytest.approx(float(predictions[example_id]), abs=1e-5), (preset, key)
            else:
                names = list(TASKS[task].label_names)
                assert [names.index(r["label"]) for r in got] == [int(predictions[i]) for i in ids], (preset, key)
