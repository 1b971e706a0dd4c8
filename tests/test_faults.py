# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Issue 12, "nothing lost, nothing silent": what a user meets with faults and bad input (a re-used output folder,
bad options, saved models, missing or damaged files, killed or diverged runs) ends in the right result or in a clear
error that names the option or the file, never in a silent wrong result. Tiny random BERT, tiny copies of the data.

The module imports only names that existed before the issue, so that it also runs (and fails) against the old code.
"""

import builtins
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import cli_args, tiny_config, tiny_datasets, train
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, TrainerCallback
from transformers import logging as transformers_logging
from transformers.testing_utils import CaptureLogger

import run_multitask
from modeling_bert_pals import BertPalsConfig, BertPalsForMultitask
from trainer.data_collator import MultitaskCollator
from trainer.multitask_trainer import SURGERY_STATE_NAME, MultitaskTrainer
from trainer.predictions import read_predictions
from trainer.training_args import MultitaskTrainingArguments


REPO = Path(__file__).resolve().parents[1]
RUN_CONFIG = "run_config.json"
OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread each (conftest.py)


def copy_data(tiny_data, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


@pytest.fixture(scope="module")
def saved_run(tiny_checkpoint, tiny_data, tmp_path_factory) -> Path:
    """A finished combined-preset run on the three tasks, with checkpoints (copy it before damaging it)."""
    path = tmp_path_factory.mktemp("saved_run") / "run"
    train(tiny_checkpoint, tiny_data, path, "--preset", "combined", "--save_steps", "1")
    return path


def read_ids(path: Path) -> list[str]:
    """The ids of a CS224N file, every row (csv parse, as the course's reader)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return [row["id"] for row in csv.DictReader(f, delimiter="\t")]


# ---- 1. An output directory holding another run ----


def test_output_dir_of_another_run_is_refused_unless_overwritten(tiny_checkpoint, tiny_data, tmp_path):
    output_dir = tmp_path / "run"
    train(tiny_checkpoint, tiny_data, output_dir, "--preset", "naive", "--save_steps", "1")
    first_model = (output_dir / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match=r"already holds a run \(preset 'naive'.*--overwrite_output_dir"):
        train(tiny_checkpoint, tiny_data, output_dir, "--preset", "gradvac")
    assert (output_dir / "model.safetensors").read_bytes() == first_model  # nothing of the first run was touched

    train(
        tiny_checkpoint, tiny_data, output_dir, "--preset", "gradvac", "--overwrite_output_dir",
        "--save_strategy", "no",
    )  # fmt: skip
    assert not list(output_dir.glob("checkpoint-*"))  # none of the first run's checkpoints is left beside the new run
    assert json.loads((output_dir / RUN_CONFIG).read_text())["training"]["gradient_surgery"] == "gradvac"


def test_resume_refuses_a_checkpoint_of_another_configuration(tiny_checkpoint, tiny_data, tmp_path):
    output_dir = tmp_path / "run"
    train(tiny_checkpoint, tiny_data, output_dir, "--preset", "naive", "--save_steps", "1")
    with pytest.raises(
        ValueError,
        match=r"checkpoint-2 belongs to another run .*gradient_surgery: 'none' there, "
        r"'gradvac' now",
    ):
        train(
            tiny_checkpoint, tiny_data, output_dir, "--preset", "gradvac", "--max_steps", "3",
            "--resume_from_checkpoint", "true",
        )  # fmt: skip
    # The same configuration resumes, with the tasks named in any order.
    train(
        tiny_checkpoint, tiny_data, output_dir, "--preset", "naive", "--max_steps", "3",
        "--resume_from_checkpoint", "true", "--tasks", "sts", "sst", "para",
    )  # fmt: skip
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3


# ---- 2. Every option validated before any work ----


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--sts_head", "foo", r"--sts_head foo: none of the tasks .* a pair_regression task \('cosine', 'linear'\)"),
        ("--pal_size", "205", r"pal_size \(205\) must be a positive multiple of pal_num_heads \(3\)"),
        ("--pooling", "max", r"Unknown pooling 'max'"),
        ("--classifier_dropout", "1.5", r"classifier_dropout must be in \[0, 1\)"),
    ],
)
def test_every_model_option_is_validated_before_any_work(option, value, message, tiny_checkpoint, tiny_data, tmp_path):
    with pytest.raises(ValueError, match=message):
        train(tiny_checkpoint, tiny_data, tmp_path / "run", option, value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_from_pretrained_overrides_and_edited_configs_are_validated(tiny_checkpoint):
    with pytest.raises(ValueError, match="Unknown sts_head 'foo'"):
        BertPalsForMultitask.from_pretrained(tiny_checkpoint, pal_size=12, pal_num_heads=3, sts_head="foo")
    with pytest.raises(ValueError, match=r"pal_size \(205\)"):
        BertPalsConfig.from_pretrained(tiny_checkpoint, pal_size=205)
    config = tiny_config()
    config.pooling = "max"  # set after __init__: checked when a model is built from it
    with pytest.raises(ValueError, match="Unknown pooling 'max'"):
        BertPalsForMultitask(config)


# ---- 3. A saved model, reused by the CLI with default arguments ----


def test_saved_model_is_reused_by_the_cli_with_default_arguments(saved_run, tiny_checkpoint, tiny_data, tmp_path):
    # config.json stores the tasks with sorted keys; the order must not matter.
    assert list(json.loads((saved_run / "config.json").read_text())["tasks"]) == ["para", "sst", "sts"]
    predict = tmp_path / "predict"
    run_multitask.main(
        [
            "--model_name_or_path", str(saved_run), "--data_dir", str(tiny_data), "--output_dir",
            str(predict), "--do_predict", "--report_to", "none", "--disable_tqdm", "True",
        ]
    )  # fmt: skip
    assert sorted(p.name for p in (predict / "predictions").iterdir()) == [
        "para-dev-output.csv",
        "sst-dev-output.csv",
        "sst-test-output.csv",
        "sts-dev-output.csv",
        "sts-test-output.csv",
    ]
    run_multitask.main(
        [
            "--model_name_or_path", str(saved_run), "--data_dir", str(tiny_data), "--output_dir",
            str(tmp_path / "eval"), "--do_eval", "--tasks", "sts", "para", "sst", "--report_to", "none",
        ]
    )  # fmt: skip
    assert "eval_overall" in json.loads((tmp_path / "eval" / "eval_results.json").read_text())

    # A model of two tasks: those are the default.
    two = tmp_path / "two"
    train(tiny_checkpoint, tiny_data, two, "--tasks", "sts", "sst", "--save_strategy", "no")
    run_multitask.main(
        [
            "--model_name_or_path", str(two), "--data_dir", str(tiny_data), "--output_dir",
            str(tmp_path / "predict_two"), "--do_predict", "--report_to", "none",
        ]
    )  # fmt: skip
    written = sorted(p.name for p in (tmp_path / "predict_two" / "predictions").iterdir())
    assert written == ["sst-dev-output.csv", "sst-test-output.csv", "sts-dev-output.csv", "sts-test-output.csv"]


# ---- 4. A missing dev split of a requested task ----


@pytest.mark.parametrize("evaluation", [["--do_eval"], ["--eval_strategy", "steps", "--eval_steps", "1"]])
def test_missing_dev_file_of_a_requested_task_is_an_error(evaluation, tiny_checkpoint, tiny_data, tmp_path):
    data = copy_data(tiny_data, tmp_path)
    (data / "quora-dev.csv").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=rf"{re.escape(str(data / 'quora-dev.csv'))}: not found; it holds "
        r"the validation split of task 'para'",
    ):
        train(tiny_checkpoint, data, tmp_path / "run", *evaluation)


# ---- 5. Every id of an unlabeled split gets a prediction ----


def test_every_test_id_gets_a_prediction_even_with_an_empty_sentence(tiny_checkpoint, tiny_data, tmp_path, caplog):
    data = copy_data(tiny_data, tmp_path)
    for name, line, column in (("ids-sst-test-student.csv", 3, "sentence"), ("sts-test-student.csv", 4, "sentence2")):
        path = data / name
        lines = path.read_text(encoding="utf-8").split("\n")
        fields = lines[line - 1].split("\t")
        fields[lines[0].split("\t").index(column)] = ""
        lines[line - 1] = "\t".join(fields)
        path.write_text("\n".join(lines), encoding="utf-8")
    caplog.set_level(logging.WARNING, logger="trainer.cs224n_builder")
    output_dir = tmp_path / "predict"
    run_multitask.main(
        cli_args(tiny_checkpoint, data, output_dir, "--tasks", "sst", "sts", "--do_train", "--max_steps", "1",
                 "--save_strategy", "no", "--do_predict")
    )  # fmt: skip
    for task, name, line in (("sst", "ids-sst-test-student.csv", 3), ("sts", "sts-test-student.csv", 4)):
        ids = read_ids(data / name)
        predictions = read_predictions(output_dir / "predictions" / f"{task}-test-output.csv")
        assert sorted(predictions) == sorted(ids) and len(ids) == 24
        assert any(str(data / name) in m and f"line {line}: empty" in m for m in caplog.messages), caplog.messages


# ---- 6. The Python API rejects wrong inputs ----


@pytest.mark.parametrize(
    "task, sts_head, inputs, message",
    [
        (
            "sst",
            "cosine",
            dict(labels=torch.tensor([0.0, 1.0, 2.0, 3.7])),
            r"Task 'sst': `labels` must be an integer \(torch.long\) tensor of class indices of shape \[4\]; got a "
            r"torch.float32 tensor of shape \[4\]",
        ),
        (
            "para",
            "cosine",
            dict(input_ids_b="first row"),
            r"`input_ids_b` must hold the second sentence of each of the 4 pairs, shape \[4, sequence_length\]; got a "
            r"torch.int64 tensor of shape \[1, 5\]",
        ),
        ("sts", "cosine", dict(input_ids_b="first row"), r"`input_ids_b` must hold the second sentence of each of "),
        (
            "sts",
            "linear",
            dict(labels=torch.full((4, 1), 2.5)),
            r"Task 'sts': `labels` must be a float tensor of scores of shape \[4\]; got a torch.float32 tensor of "
            r"shape "
            r"\[4, 1\]",
        ),
    ],
)
def test_forward_rejects_wrong_inputs(task, sts_head, inputs, message):
    torch.manual_seed(0)
    model = BertPalsForMultitask(tiny_config(sts_head=sts_head)).eval()
    ids, ids_b = torch.randint(1, 99, (4, 7)), torch.randint(1, 99, (4, 5))
    batch = dict(input_ids=ids) if task == "sst" else dict(input_ids=ids, input_ids_b=ids_b)
    if inputs.get("input_ids_b") == "first row":
        inputs = dict(input_ids_b=ids_b[:1])  # a batch of 1 would broadcast against a batch of 4
    with pytest.raises(ValueError, match=message):
        model(task=task, **{**batch, **inputs})
    # The right dtypes and shapes still work.
    labels = torch.rand(4) * 5 if task == "sts" else torch.tensor([0, 1, 1, 0])
    assert model(task=task, **batch, labels=labels).loss.isfinite()


# ---- Checkpoints: complete or ignored; never a surgery run without its surgery state ----


def test_incomplete_checkpoint_is_skipped_and_surgery_state_is_required(tiny_checkpoint, tiny_data, tmp_path):
    output_dir = tmp_path / "run"
    train(tiny_checkpoint, tiny_data, output_dir, "--preset", "gradvac", "--save_steps", "1")
    # A save killed early, as the issue saw it: the folder holds only the config and the code files.
    killed = output_dir / "checkpoint-3"
    killed.mkdir()
    for name in ("config.json", "configuration_bert_pals.py", "modeling_bert_pals.py"):
        shutil.copy(output_dir / "checkpoint-2" / name, killed / name)
    train(
        tiny_checkpoint, tiny_data, output_dir, "--preset", "gradvac", "--max_steps", "3",
        "--resume_from_checkpoint", "true",
    )  # fmt: skip
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert (killed / "model.safetensors").is_file() and (killed / RUN_CONFIG).is_file()  # written again, complete

    (killed / SURGERY_STATE_NAME).unlink()
    with pytest.raises(ValueError, match=rf"checkpoint-3 is incomplete: {SURGERY_STATE_NAME} is missing"):
        train(
            tiny_checkpoint, tiny_data, output_dir, "--preset", "gradvac", "--max_steps", "4",
            "--resume_from_checkpoint", str(killed),
        )  # fmt: skip


# ---- A diverged run names its last healthy checkpoint and never saves non-finite weights ----


def tiny_trainer(output_dir, tokenizer, callbacks=None, **kwargs) -> MultitaskTrainer:
    torch.manual_seed(0)
    config = tiny_config(
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        classifier_dropout=0.1,
        pal_decoder_init="normal",
        sts_head="linear",
    )
    defaults = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        max_steps=6,
        save_steps=1,
        learning_rate=1e-3,
        optim="adamw_torch",
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        gradient_surgery="gradvac",
        gradvac_beta=0.5,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        use_cpu=True,
        dataloader_pin_memory=False,
    )
    defaults.update(kwargs)
    return MultitaskTrainer(
        model=BertPalsForMultitask(config),
        args=MultitaskTrainingArguments(**defaults),
        train_dataset=tiny_datasets(sizes=(("sst", 12), ("para", 16), ("sts", 8))),
        data_collator=MultitaskCollator(tokenizer),  # no processing_class: the checkpoints carry no tokenizer
        callbacks=callbacks,
    )


class Diverge(TrainerCallback):
    """Blows the weights up after step 3 (finite, 1000x), and makes one weight NaN after step 4's update (before
    its save) or right after its save."""

    def __init__(self, nan_event: str):
        self.nan_event = nan_event

    def _nan(self, model):
        with torch.no_grad():
            model.bert.embeddings.LayerNorm.weight[0] = float("nan")  # every token of every task goes through it

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 3:
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.mul_(1000.0)
        if state.global_step == 4 and self.nan_event == "step":
            self._nan(model)

    def on_save(self, args, state, control, model=None, **kwargs):
        if state.global_step == 4 and self.nan_event == "save":
            self._nan(model)


@pytest.mark.slow
@pytest.mark.parametrize(
    "nan_event, message",
    [
        (
            "step",
            r"After step 4 the weights are not finite .*checkpoint-4 was not written\. The last healthy "
            r"checkpoint .* is \S+checkpoint-2 ",
        ),
        ("save", r"Non-finite training loss at step 4 .*The last healthy checkpoint .* is \S+checkpoint-2 "),
    ],
)
def test_diverged_run_names_the_last_healthy_checkpoint(nan_event, message, tmp_path, minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    trainer = tiny_trainer(
        tmp_path,
        tokenizer,
        callbacks=[Diverge(nan_event)],
        logging_steps=1,
        optim="sgd",
        learning_rate=0.01,
        lr_scheduler_type="constant",
    )
    with pytest.raises(FloatingPointError, match=message):
        trainer.train()
    for checkpoint in tmp_path.glob("checkpoint-*"):  # no saved checkpoint holds a non-finite weight
        weights = load_file(checkpoint / "model.safetensors")
        assert all(torch.isfinite(value).all() for value in weights.values()), checkpoint


# ---- Damaged and missing files are named ----


def test_damaged_files_are_named(saved_run, tiny_checkpoint, tiny_data, tmp_path):
    run = Path(shutil.copytree(saved_run, tmp_path / "run"))
    predict = ["--data_dir", str(tiny_data), "--do_predict", "--report_to", "none"]

    # A truncated model.safetensors, loaded as a saved model.
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{re.escape(str(weights))}: cannot load the model weights"):
        run_multitask.main(["--model_name_or_path", str(run), "--output_dir", str(tmp_path / "p1"), *predict])

    # A truncated model.safetensors in a checkpoint: resumed from, as the last complete checkpoint would be.
    resume = cli_args(tiny_checkpoint, tiny_data, run, "--do_train", "--preset", "combined", "--max_steps", "3")
    checkpoint = run / "checkpoint-2"
    weights = checkpoint / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])
    with pytest.raises(
        ValueError,
        match=rf"checkpoint-2 is incomplete: model.safetensors has {size // 2} bytes, "
        rf"{size} when it was saved .* The last complete checkpoint beside it is "
        r"\S+checkpoint-1",
    ):
        run_multitask.main([*resume, "--resume_from_checkpoint", str(checkpoint)])

    # A corrupt gradient_surgery.pt (same size, so only reading it tells).
    checkpoint = run / "checkpoint-1"
    surgery = checkpoint / SURGERY_STATE_NAME
    surgery.write_bytes(b"\x00" * surgery.stat().st_size)
    with pytest.raises(ValueError, match=rf"{re.escape(str(surgery))}: cannot read the gradient-surgery state"):
        run_multitask.main([*resume, "--resume_from_checkpoint", str(checkpoint)])

    # Data: a byte that is not UTF-8, and a file with only its header.
    data = copy_data(tiny_data, tmp_path)
    path = data / "ids-sst-train.csv"
    raw = path.read_bytes().split(b"\n")
    raw[6] = raw[6][:10] + b"\xff" + raw[6][10:]
    path.write_bytes(b"\n".join(raw))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: line 7: byte 0xff at column 11 is not UTF-8"):
        train(tiny_checkpoint, data, tmp_path / "t1")
    shutil.copy(tiny_data / "ids-sst-train.csv", path)
    header_only = data / "sts-dev.csv"
    header_only.write_text(header_only.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{re.escape(str(header_only))}: no data rows, only a header line"):
        train(tiny_checkpoint, data, tmp_path / "t2")

    # A model folder that does not exist is not an invalid Hub repo id.
    missing = tmp_path / "no" / "such_model"
    with pytest.raises(
        FileNotFoundError,
        match=rf"--model_name_or_path {re.escape(str(missing))}: no such model "
        r"folder",
    ):
        run_multitask.main(["--model_name_or_path", str(missing), "--output_dir", str(tmp_path / "p2"), *predict])


def test_cli_errors_are_one_line_with_exit_status_1(tiny_checkpoint, tiny_data, tmp_path, capsys):
    cases = [
        cli_args(tiny_checkpoint, tiny_data, tmp_path / "a", "--do_train", "--sts_head", "foo"),
        cli_args(tmp_path / "missing", tiny_data, tmp_path / "b", "--do_predict"),
        cli_args(tiny_checkpoint, tmp_path / "no_data", tmp_path / "c", "--do_train"),
    ]
    for args in cases:
        assert run_multitask.cli(args) == 1
        err = capsys.readouterr().err
        assert err.startswith("run_multitask.py: error: ") and err.count("\n") == 1, err
    with pytest.raises(ValueError, match="--sts_head foo: none of the tasks"):  # --traceback: the exception itself
        run_multitask.cli([*cases[0], "--traceback"])


# ---- Quiet where nothing is wrong ----


def test_loading_a_bert_checkpoint_is_quiet_but_unexpected_and_missing_weights_are_reported(tiny_checkpoint, tmp_path):
    logger = transformers_logging.get_logger("transformers")
    with CaptureLogger(logger) as captured:
        BertPalsForMultitask.from_pretrained(tiny_checkpoint, pal_size=12, pal_num_heads=3)
    assert "You are using a model of type" not in captured.out and "LOAD REPORT" not in captured.out, captured.out

    # A weight the model does not have is still reported.
    extra = Path(shutil.copytree(tiny_checkpoint, tmp_path / "extra"))
    weights = load_file(extra / "model.safetensors")
    weights["pooler.extra.weight"] = torch.zeros(2)
    save_file(weights, extra / "model.safetensors", metadata={"format": "pt"})
    with CaptureLogger(logger) as captured:
        BertPalsForMultitask.from_pretrained(extra, pal_size=12, pal_num_heads=3)
    assert "LOAD REPORT" in captured.out and "pooler.extra.weight" in captured.out and "UNEXPECTED" in captured.out

    # A saved multitask model missing a head weight is reported: only a BERT checkpoint lacks them by design.
    saved = tmp_path / "saved"
    BertPalsForMultitask.from_pretrained(tiny_checkpoint, pal_size=12, pal_num_heads=3).save_pretrained(saved)
    weights = load_file(saved / "model.safetensors")
    del weights["heads.sst.classifier.bias"]
    save_file(weights, saved / "model.safetensors", metadata={"format": "pt"})
    with CaptureLogger(logger) as captured:
        BertPalsForMultitask.from_pretrained(saved)
    assert "heads.sst.classifier.bias" in captured.out and "MISSING" in captured.out


def readme_python_line(start: str) -> str:
    """The README's first line that starts with `start` (the main command comes first)."""
    readme = (REPO / "README.md").read_text()
    return next(line for line in readme.splitlines() if line.startswith(start))


def test_readme_tokenizer_line_loads_a_saved_run_without_a_prompt(saved_run, tmp_path):
    line = readme_python_line("tokenizer = AutoTokenizer.from_pretrained(").replace("outputs/combined", str(saved_run))
    code = f"from transformers import AutoTokenizer\n{line}\nprint(type(tokenizer).__name__)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=OFFLINE_ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Do you wish to run the custom code" not in output, output
    assert "You are using a model of type" not in output and "BertTokenizer" in result.stdout, output


def test_readme_command_launches_without_accelerate_default_warnings(tmp_path):
    command = readme_python_line("accelerate launch ").replace("$(nproc)", str(os.cpu_count())).split()
    launch_options = command[2 : command.index("run_multitask.py")]
    script = tmp_path / "script.py"
    script.write_text("import os\nprint('launched with', os.environ['OMP_NUM_THREADS'], 'threads')\n")
    env = {key: value for key, value in OFFLINE_ENV.items() if key != "OMP_NUM_THREADS"}
    result = subprocess.run(
        ["accelerate", "launch", *launch_options, str(script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "had defaults used instead" not in result.stderr, result.stderr
    # Left to itself, `accelerate launch` would pin the process to one thread.
    assert f"launched with {os.cpu_count()} threads" in result.stdout, result.stdout


# ---- Fault injection: runs killed at random points, resumed, end where an uninterrupted run ends ----

_FORK_MODULES = ["torch", "transformers", "datasets", "modeling_bert_pals", "trainer.multitask_trainer"]


def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def _train_to_the_end(output_dir: str, tokenizer_path: str, kill: tuple | None):
    """
    A child process, as a user would run it: `resume_from_checkpoint=True` if the output folder holds a checkpoint
    folder. Writes `final.safetensors` and `last_process.json` (steps this process trained) at the end. `kill` =
    ("write", k): SIGKILL at the k-th file write inside a checkpoint save; ("time", s): SIGKILL after s seconds.
    """
    torch.set_num_threads(1)
    if kill is not None and kill[0] == "time":
        threading.Timer(kill[1], _kill_self).start()
    if kill is not None and kill[0] == "write":
        writes, saving = [0], [False]
        real_open, real_replace, real_save = builtins.open, os.replace, MultitaskTrainer._save_checkpoint

        def count_write():
            if saving[0]:
                writes[0] += 1
                if writes[0] == kill[1]:
                    _kill_self()

        def open_(file, mode="r", *args, **kwargs):
            if any(flag in mode for flag in "wax"):
                count_write()
            return real_open(file, mode, *args, **kwargs)

        def replace(*args, **kwargs):
            count_write()
            return real_replace(*args, **kwargs)

        def save_checkpoint(self, *args, **kwargs):
            saving[0] = True
            try:
                return real_save(self, *args, **kwargs)
            finally:
                saving[0] = False

        builtins.open, os.replace, MultitaskTrainer._save_checkpoint = open_, replace, save_checkpoint
    steps = CountSteps()
    trainer = tiny_trainer(output_dir, AutoTokenizer.from_pretrained(tokenizer_path), [steps], save_total_limit=2)
    trainer.train(resume_from_checkpoint=True if list(Path(output_dir).glob("checkpoint-*")) else None)
    with open(os.path.join(output_dir, "last_process.json"), "w") as f:
        json.dump({"steps": steps.steps, "global_step": trainer.state.global_step}, f)
    weights = {name: p.detach().contiguous() for name, p in trainer.model.named_parameters()}
    save_file(weights, os.path.join(output_dir, "final.safetensors.tmp"))
    os.replace(os.path.join(output_dir, "final.safetensors.tmp"), os.path.join(output_dir, "final.safetensors"))


@pytest.mark.slow
def test_runs_killed_at_random_points_resume_to_the_same_weights(tmp_path, minilm_path):
    """
    Three runs of 6 steps (a checkpoint at each, at most 2 kept; AdamW, dropout, GradVac), each SIGKILLed three times:
    first at a random file write inside a checkpoint save after the first (so that there is a checkpoint to resume
    from), then at random times; each kill is followed by a resume. Every run must end with the weights of an
    uninterrupted run, and its last process must have resumed (trained fewer than the 6 steps).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*_FORK_MODULES, __name__])  # forked children skip the ~10 s of imports

    def run(output_dir, kill) -> int:
        process = context.Process(target=_train_to_the_end, args=(str(output_dir), minilm_path, kill))
        process.start()
        process.join(timeout=300)
        assert process.exitcode is not None, "a training process hung"
        return process.exitcode

    assert run(tmp_path / "uninterrupted", None) == 0
    reference = load_file(tmp_path / "uninterrupted" / "final.safetensors")
    rng = random.Random(int(os.environ.get("BERT_PALS_FAULT_SEED", "12")))  # another seed: other kill points
    log = []
    for attempt in range(3):
        output_dir = tmp_path / f"killed-{attempt}"
        # ~8 writes per save (config, code, weights, tokenizer config, trainer state, ..., run_config.json).
        kills = [("write", rng.randint(9, 30)), ("time", rng.uniform(0.5, 3.0)), ("time", rng.uniform(0.5, 3.0))]
        for kill in kills:
            exitcode = run(output_dir, kill)
            log.append((attempt, kill, exitcode))
            assert exitcode in (0, -signal.SIGKILL), log
            if exitcode == 0:
                break
        if exitcode != 0:
            assert run(output_dir, None) == 0, log
        assert any(a == attempt and kill[0] == "write" and code == -signal.SIGKILL for a, kill, code in log), log
        last = json.loads((output_dir / "last_process.json").read_text())
        assert last["global_step"] == 6 and last["steps"] < 6, (last, log)  # it resumed, and stopped at max_steps
        final = load_file(output_dir / "final.safetensors")
        assert final.keys() == reference.keys()
        for name in reference:
            torch.testing.assert_close(final[name], reference[name], rtol=0, atol=1e-6, msg=f"{name} {log}")
    print("kills (attempt, kill, exit code):", log)
