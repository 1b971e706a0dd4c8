# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Issue 21, "nothing silent": the probe's faults that ended with exit status 0 and a wrong result (or lost data), and
those that failed too late or unhelpfully. Each gets the right behaviour, or a one-line error naming the argument or
file, raised before any work and leaving nothing behind. Tiny random BERT, tiny copies of the data (the data-file
faults are in test_data_probe.py, the model API's in test_model_input_errors.py).
"""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, cli_args, train

import run_multitask
from trainer.predictions import read_predictions


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread each (conftest.py)


def run_cli(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run_multitask.py", *args], cwd=REPO, env=ENV, capture_output=True, text=True, **kwargs
    )


def history(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


# ---- Silent faults: exit status 0 and a wrong result ----


def test_preset_with_an_equals_sign_is_applied(tiny_checkpoint, tiny_data, tmp_path):
    """`--preset=baseline` applied no preset, yet recorded one."""
    spaced = run_multitask.parse_args(cli_args(tiny_checkpoint, tiny_data, tmp_path, "--preset", "baseline"))
    joined = run_multitask.parse_args(cli_args(tiny_checkpoint, tiny_data, tmp_path, "--preset=baseline"))
    assert joined == spaced
    model_args, _, training_args = joined
    assert (model_args.use_pals, model_args.sts_head) == (False, ["linear"])
    assert (training_args.task_schedule, training_args.freeze_encoder, training_args.learning_rate) == (
        "sequential",
        True,
        1e-3,
    )
    output_dir = tmp_path / "run"
    train(tiny_checkpoint, tiny_data, output_dir, "--preset=baseline", "--save_strategy", "no")
    recorded = json.loads((output_dir / "run_config.json").read_text())
    assert recorded["preset"] == "baseline"
    assert recorded["model"]["use_pals"] is False and recorded["tasks"]["sts"]["head"] == "linear"
    assert recorded["training"]["task_schedule"] == "sequential" and recorded["training"]["freeze_encoder"]


def test_argument_files_are_read_as_the_command_line(tiny_checkpoint, tiny_data, tmp_path):
    """A YAML `learning_rate: 1e-4` (a string to PyYAML) and `tasks: sst` (a string) mean what they mean as flags."""
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_checkpoint}\noutput_dir: {tmp_path / 'out'}\nlearning_rate: 1e-4\n"
        "tasks: sst\npreset: naive\nsave_strategy: 'no'\n"
    )
    _, data_args, training_args = run_multitask.parse_args([str(config)])
    assert training_args.learning_rate == 1e-4 and data_args.tasks == ["sst"]
    assert training_args.task_schedule == "round_robin"  # the preset's
    as_json = tmp_path / "run.json"
    as_json.write_text(
        json.dumps({"model_name_or_path": tiny_checkpoint, "output_dir": str(tmp_path), "tasks": "sts"})
    )
    assert run_multitask.parse_args([str(as_json)])[1].tasks == ["sts"]
    as_json.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"run.json: expected a mapping of argument names"):
        run_multitask.parse_args([str(as_json)])


def test_max_steps_zero_is_refused(tiny_checkpoint, tiny_data, tmp_path):
    """`--max_steps 0` trained one step."""
    with pytest.raises(ValueError, match=r"--max_steps must be a number of optimizer steps above 0, or -1"):
        run_multitask.main(cli_args(tiny_checkpoint, tiny_data, tmp_path / "run", "--do_train", "--max_steps", "0"))
    assert not (tmp_path / "run").exists()


def test_predicting_with_an_untrained_model_is_refused(tiny_checkpoint, tiny_data, tmp_path, caplog):
    """`--do_predict` on a plain BERT checkpoint wrote five files from random heads, with exit status 0."""
    with pytest.raises(ValueError, match=r"--do_predict without --do_train: .* is a plain BERT checkpoint"):
        run_multitask.main(cli_args(tiny_checkpoint, tiny_data, tmp_path / "predict", "--do_predict"))
    assert not (tmp_path / "predict").exists()
    # Evaluating one is a measurement of random heads: allowed, and said.
    run_multitask.main(cli_args(tiny_checkpoint, tiny_data, tmp_path / "eval", "--do_eval", "--tasks", "sst"))
    assert any("heads of ['sst'] are newly initialised" in message for message in caplog.messages)


@pytest.mark.slow
def test_a_killed_prediction_run_leaves_the_previous_predictions_whole(tiny_checkpoint, data_dir, tmp_path):
    """A kill during `--do_predict` left one file truncated and files of two models side by side."""
    first, second = tmp_path / "first", tmp_path / "second"
    for output_dir, seed in ((first, "0"), (second, "1")):
        run_multitask.main(
            cli_args(tiny_checkpoint, data_dir, output_dir, "--seed", seed, "--do_train", "--max_steps", "1",
                     "--max_train_samples", "8", "--save_strategy", "no", "--do_predict")
        )  # fmt: skip
    before = {path.name: path.read_bytes() for path in (first / "predictions").iterdir()}
    assert len(before) == 5 and before != {p.name: p.read_bytes() for p in (second / "predictions").iterdir()}

    # The second model predicts into the first one's folder, one row per batch (slow), and is killed once it has
    # written its first file.
    predict = ["--model_name_or_path", str(second), "--data_dir", str(data_dir), "--output_dir", str(first),
               "--do_predict", "--report_to", "none", "--disable_tqdm", "True"]  # fmt: skip
    one_row_batches = [*predict, "--per_device_eval_batch_size", "1"]
    process = subprocess.Popen([sys.executable, "run_multitask.py", *one_row_batches], cwd=REPO, env=ENV)
    partial = first / "predictions.partial"
    deadline = time.monotonic() + 300
    while not (partial.is_dir() and any(partial.glob("*.csv"))) and process.poll() is None:
        assert time.monotonic() < deadline, "no prediction file was written"
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert {path.name: path.read_bytes() for path in (first / "predictions").iterdir()} == before

    # Run again, it replaces the folder whole, with the second model's predictions.
    result = run_cli(predict)  # at the evaluation batch size the second model's own predictions had
    assert result.returncode == 0, result.stderr[-2000:]
    assert not partial.exists()
    after = {path.name: read_predictions(path) for path in (first / "predictions").iterdir()}
    assert after == {path.name: read_predictions(path) for path in (second / "predictions").iterdir()}


def test_a_new_learning_rate_on_resume_is_the_one_trained_at(tiny_checkpoint, tiny_data, tmp_path):
    """The restored optimizer and scheduler overwrote a new `--learning_rate` (and the model card claimed it)."""
    schedule = ["--max_steps", "4", "--save_steps", "2", "--logging_steps", "1", "--lr_scheduler_type", "linear",
                "--preset", "naive"]  # fmt: skip
    full = tmp_path / "full"
    run_multitask.main(cli_args(tiny_checkpoint, tiny_data, full, "--do_train", "--learning_rate", "1e-3", *schedule))
    resumed = tmp_path / "resumed"
    run_multitask.main(
        cli_args(tiny_checkpoint, tiny_data, resumed, "--do_train", "--learning_rate", "5e-4", *schedule,
                 "--resume_from_checkpoint", str(full / "checkpoint-2"))
    )  # fmt: skip
    rates = {entry["step"]: entry["learning_rate"] for entry in history(full) if "learning_rate" in entry}
    new_rates = {entry["step"]: entry["learning_rate"] for entry in history(resumed) if "learning_rate" in entry}
    assert {3, 4} <= set(new_rates) and all(rates[step] > 0 for step in (3,))
    for step in (3, 4):  # the same schedule, from the same step, at half the peak rate
        assert new_rates[step] == pytest.approx(rates[step] / 2)
    assert "5e-4" in (resumed / "README.md").read_text() or "0.0005" in (resumed / "README.md").read_text()


def test_two_runs_into_one_output_dir_cannot_both_run(tiny_checkpoint, tiny_data, tmp_path):
    """Two runs at once into one new output dir both passed the "not empty" check, and both exited 0."""
    from trainer.output_lock import lock_output_dir

    output_dir = tmp_path / "run"
    with lock_output_dir(str(output_dir)):  # another run holds it
        with pytest.raises(BlockingIOError, match=rf"--output_dir {output_dir} is in use by another run \(process "):
            train(tiny_checkpoint, tiny_data, output_dir)
    train(tiny_checkpoint, tiny_data, output_dir, "--save_strategy", "no")  # the lock went with its holder
    assert (output_dir / "model.safetensors").is_file()

    # Two real processes started together: exactly one trains; the other is refused with exit status 1.
    output_dir = tmp_path / "together"
    args = cli_args(tiny_checkpoint, tiny_data, output_dir, "--do_train", "--max_steps", "2", "--save_strategy", "no")
    processes = [
        subprocess.Popen([sys.executable, "run_multitask.py", *args], cwd=REPO, env=ENV, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(2)
    ]  # fmt: skip
    outcomes = sorted((process.wait(), process.stderr.read()) for process in processes)
    assert [code for code, _ in outcomes] == [0, 1], outcomes
    assert "is in use by another run" in outcomes[1][1] or "already holds a run" in outcomes[1][1]


# ---- Loud, but too late or unhelpful: every value is checked before any work, and nothing is left behind ----


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--learning_rate=-1e-4"], r"--learning_rate must be above 0; got -0.0001"),
        (["--per_device_train_batch_size", "0"], r"--per_device_train_batch_size must be at least 1; got 0"),
        (["--per_device_train_batch_size", "-2"], r"--per_device_train_batch_size must be at least 1; got -2"),
        (["--gradient_accumulation_steps", "0"], r"--gradient_accumulation_steps must be at least 1"),
        (["--max_seq_length", "1000"], r"--max_seq_length 1000: \S+ has 512 position embeddings"),
        (["--max_seq_length", "0"], r"--max_seq_length must be at least 5; got 0"),
        (["--max_seq_length", "-3"], r"--max_seq_length must be at least 5; got -3"),
        (["--num_train_epochs", "0"], r"--num_train_epochs must be above 0"),
        (["--weight_decay", "-0.1"], r"--weight_decay must be 0 or above"),
        (["--max_train_samples", "0"], r"--max_train_samples must be at least 1"),
        (["--load_best_model_at_end", "--save_strategy", "no"], r"--load_best_model_at_end needs checkpoints"),
        (
            ["--gradient_surgery", "gradvac", "--tasks", "sst"],
            r"--gradient_surgery gradvac: it combines the gradients",
        ),
    ],
    ids=lambda value: "_".join(value) if isinstance(value, list) else None,
)
def test_bad_values_are_refused_before_any_work(flags, message, tiny_checkpoint, tiny_data, tmp_path, capsys):
    output_dir = tmp_path / "run"
    code = run_multitask.cli(cli_args(tiny_checkpoint, tiny_data, output_dir, "--do_train", "--do_eval", *flags))
    error = capsys.readouterr().err
    assert code == 1 and len(error.strip().splitlines()) == 1
    assert re.search(message, error), error
    assert not output_dir.exists()  # no run_config.json to refuse the corrected command with


def test_resume_with_another_seed_or_changed_data_is_refused(tiny_checkpoint, tiny_data, tmp_path):
    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    output_dir = tmp_path / "run"
    train(tiny_checkpoint, data, output_dir, "--save_steps", "1")
    resume = ["--do_train", "--max_steps", "3", "--resume_from_checkpoint", "true"]
    with pytest.raises(ValueError, match=r"belongs to another run .* seed: 0 there, 1 now"):
        run_multitask.main(cli_args(tiny_checkpoint, data, output_dir, *resume, "--seed", "1"))
    train_file = data / "ids-sst-train.csv"
    train_file.write_text("".join(train_file.read_text().splitlines(keepends=True)[:-1]))  # one row fewer
    with pytest.raises(ValueError, match=r"training data of task 'sst': \{'source': 'sha256:"):
        run_multitask.main(cli_args(tiny_checkpoint, data, output_dir, *resume))
    with pytest.raises(ValueError, match=r"training data of task 'para': .*'max_train_samples': None\} there, .*16"):
        run_multitask.main(cli_args(tiny_checkpoint, tiny_data, output_dir, *resume, "--max_train_samples", "16"))
    run_multitask.main(cli_args(tiny_checkpoint, tiny_data, output_dir, *resume))  # the run's own data and seed
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3


@pytest.mark.slow
def test_a_full_disk_is_named_and_recovered_from(tiny_checkpoint, tiny_data, tmp_path):
    """A full disk gave `RuntimeError: [enforce fail at inline_container.cc:672] unexpected pos`. A file-size limit
    makes the same failure of the same writes (torch's and safetensors') without filling a real disk."""

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    output_dir = tmp_path / "run"
    args = cli_args(tiny_checkpoint, tiny_data, output_dir, "--do_train", "--max_steps", "2", "--save_steps", "1")
    result = run_cli(args, preexec_fn=limit_file_size)
    assert result.returncode == 1, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]  # after the progress bars: the one line of the error
    assert result.stderr.count("run_multitask.py: error:") == 1 and "Traceback" not in result.stderr
    assert re.search(rf"error: Writing {re.escape(str(output_dir))}/checkpoint-1 failed \(.*\); its disk has", line)
    assert "no space left, or a file size limit? There is no complete checkpoint yet" in line
    # With room again, the run starts over in its folder.
    result = run_cli(args + ["--overwrite_output_dir"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((output_dir / "checkpoint-2" / "run_config.json").read_text())["checkpoint"]["step"] == 2
