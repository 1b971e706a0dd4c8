# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The runner of the experiments: each run is an ordinary `run_multitask.py` command with one shared budget, run as a
subprocess from the repository root, resumed after a kill, gathered into its results JSON and committed.

For each run, in this order: its results JSON exists: skipped. Its output dir holds a finished run
(`all_results.json` with training and dev metrics): the results are gathered from it. It holds a complete checkpoint
(as `trainer.checkpoints` judges it: every file its save listed is there, in full): the command runs again with
`--resume_from_checkpoint <that checkpoint>`; a checkpoint a kill cut short is passed over. Otherwise the run starts,
with `--overwrite_output_dir true` if a killed attempt left files but no complete checkpoint (nothing to keep). A
results JSON or an output dir made by another command is an error, never mixed into a table. Each attempt is recorded
beside the run's output dir (`run_multitask.py` wants that dir to itself), in `<name>.attempts.json`, its output in
`<name>.log`.
"""

import argparse
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from trainer.checkpoints import checkpoint_step, find_checkpoints, write_json_atomically
from trainer.tasks import OVERALL, PAPER_TASKS, metric_key, metric_keys

from .records import machine, read_json, steps_per_epoch, summarize_history


REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("experiments")

# Set by the runner for every run; anything else may be passed through.
MANAGED_FLAGS = (
    "--preset",
    "--seed",
    "--output_dir",
    "--num_train_epochs",
    "--resume_from_checkpoint",
    "--overwrite_output_dir",
)
OVERALL_KEY = metric_key(OVERALL)


def shared_flags(num_train_epochs: float) -> list[str]:
    """The budget and evaluation every run shares."""
    return [
        "--do_train", "--do_eval",
        "--num_train_epochs", format_number(num_train_epochs),
        "--per_device_train_batch_size", "8",
        "--eval_strategy", "epoch",
        "--save_strategy", "epoch",
        "--save_total_limit", "1",
        "--load_best_model_at_end",
        "--logging_steps", "50",
        "--report_to", "none",
        "--disable_tqdm", "true",
    ]  # fmt: skip


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass
class Run:
    row: str  # a preset of the paper's, or a row of an ablation or screen: the run's name without its seed
    seed: int
    output_dir: Path  # this run's own output dir
    argv: list[str]  # ["python", "run_multitask.py", ...]
    results_file: Path

    @property
    def name(self) -> str:
        return f"{self.row}-seed{self.seed}"

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    @property
    def attempts_file(self) -> Path:
        return self.output_dir.with_name(f"{self.name}.attempts.json")

    @property
    def log_file(self) -> Path:
        return self.output_dir.with_name(f"{self.name}.log")


def row_argv(
    flags: list[str],
    seed: int,
    output_dir: Path,
    epochs: float,
    passthrough: list[str],
    preset_flags: tuple[str, ...] = (),
) -> list[str]:
    """A run's `run_multitask.py` command: its flags, the seed, the output dir, a preset's reproduction flags, then
    the shared budget and the flags passed through (last, so that they win)."""
    return [
        "python", "run_multitask.py", *flags,
        "--seed", str(seed),
        "--output_dir", command_path(output_dir),
        *preset_flags,
        *shared_flags(epochs),
        *passthrough,
    ]  # fmt: skip


def command_path(path: Path) -> str:
    """A path as a command run from the repository root reads it: relative inside the repository, else absolute."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def flag_value(argv: list[str], flag: str, default: str | None = None) -> str | None:
    """The last value given to `flag` (`--flag value` or `--flag=value`), as argparse reads it."""
    value = default
    for index, item in enumerate(argv):
        if item == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif item.startswith(flag + "="):
            value = item.split("=", 1)[1]
    return value


def git_state(repo: Path = REPO) -> tuple[str | None, bool | None]:
    """HEAD's commit, and whether tracked files outside `results/` differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit.stdout.strip(), bool(status.stdout.strip())


def commit_results(paths: list[Path], message: str) -> bool:
    """`git add -f` and `git commit` of just `paths`, in the repository that holds them; other staged changes stay
    (`-f`: the project's `.gitignore` has `runs/`)."""
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=paths[0].parent, capture_output=True, text=True, check=False
    )
    if top.returncode != 0:
        logger.warning(f"--commit_results: {paths[0].parent} is not in a git repository; nothing committed.")
        return False
    names = [str(path.resolve()) for path in paths]
    for command in (["git", "add", "-f", "--", *names], ["git", "commit", "-q", "-m", message, "--", *names]):
        result = subprocess.run(command, cwd=top.stdout.strip(), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            logger.warning(
                f"--commit_results: `{shlex.join(command)}` failed: {(result.stderr or result.stdout).strip()}"
            )
            return False
    return True


# ---- Resuming ----


def last_checkpoint(run: Run) -> Path | None:
    """The last complete checkpoint in the run's output dir, as the trainer judges it; None if there is none."""
    complete, _ = find_checkpoints(str(run.output_dir))
    return Path(complete[-1]) if complete else None


def is_finished(output_dir: Path) -> bool:
    results = read_json(output_dir / "all_results.json", {})
    return "train_runtime" in results and OVERALL_KEY in results and (output_dir / "trainer_state.json").is_file()


def run_state(run: Run) -> str:
    """`done` (results JSON exists), `finished` (gather from the output dir), `resume` or `start`."""
    if run.results_file.is_file():
        return "done"
    if is_finished(run.output_dir):
        return "finished"
    return "resume" if last_checkpoint(run) is not None else "start"


def check_commands(runs: list[Run]) -> None:
    """Refuses results or output dirs that another command made: they would not share the budget."""
    problems = []
    for run in runs:
        record = read_json(run.results_file)
        if record is not None and record.get("command") != run.command:
            problems.append(f"{run.results_file} was made by `{record.get('command')}`")
        attempts = read_json(run.attempts_file, []) if run.output_dir.is_dir() else []
        if attempts and attempts[-1]["command"] != run.command:
            problems.append(f"{run.output_dir} was made by `{attempts[-1]['command']}` (see {run.attempts_file})")
    if problems:
        raise ValueError(
            "Existing results do not match this invocation's commands (another budget or flags):\n  "
            + "\n  ".join(problems)
            + "\nMove them away, or choose another --output_dir / --results_dir."
        )


def attempt_argv(run: Run) -> tuple[list[str], Path | None]:
    """The command of the next attempt at an unfinished run, and the checkpoint it resumes from."""
    checkpoint = last_checkpoint(run)
    if checkpoint is not None:
        # The checkpoint by name (not `true`): the one judged complete here, whatever later folder a kill left.
        return run.argv + ["--resume_from_checkpoint", command_path(checkpoint)], checkpoint
    if run.output_dir.is_dir() and any(run.output_dir.iterdir()):
        return run.argv + ["--overwrite_output_dir", "true"], None  # a killed attempt's leftovers: nothing to keep
    return run.argv, None


# ---- Gathering ----


def gather(run: Run) -> dict:
    """The run's results JSON, from its output dir (`all_results.json`, `trainer_state.json`, the attempts)."""
    results = read_json(run.output_dir / "all_results.json")
    state = read_json(run.output_dir / "trainer_state.json")
    attempts = read_json(run.attempts_file, [])
    history = state["log_history"]
    steps = state["global_step"]
    epoch_steps = steps_per_epoch(history)

    segments = [a for a in attempts if a["train_runtime"] is not None and a["end_step"] > a["resumed_from_step"]]
    if segments:
        train_runtime = sum(a["train_runtime"] for a in segments)
        timed_steps = sum(a["end_step"] - a["resumed_from_step"] for a in segments)
    else:  # made outside this script: assume one uninterrupted attempt
        train_runtime, timed_steps = results["train_runtime"], steps
    seconds_per_step = train_runtime / timed_steps if timed_steps else None
    if attempts:
        commit, dirty = attempts[-1]["commit"], attempts[-1]["dirty"]
    else:
        commit, dirty = git_state()
    summary = summarize_history(history, [a["resumed_from_step"] for a in attempts if a["resumed_from_step"] > 0])
    eval_seconds = [item["seconds"] for item in summary["eval_runtime_per_epoch_s"]]
    record = {
        "preset": run.row,  # the key of every run JSON, rows of ablations included: the tables read it
        "seed": run.seed,
        "command": run.command,
        "commit": commit,
        "dirty": dirty,
        "output_dir": command_path(run.output_dir),
        "steps": steps,
        "steps_per_epoch": epoch_steps,
        "epochs": steps / epoch_steps,
        "train_samples": results.get("train_samples"),
        "train_runtime": train_runtime,
        "seconds_per_step": seconds_per_step,
        "time_per_epoch_s": seconds_per_step * epoch_steps if seconds_per_step else None,
        "run_time_s": seconds_per_step * steps if seconds_per_step else None,
        "mean_eval_runtime_per_epoch_s": sum(eval_seconds) / len(eval_seconds) if eval_seconds else None,
        "wall_time_s": sum(a["wall_time_s"] or 0.0 for a in attempts) or None,
        "attempts": len(attempts),
        "resumed_from_steps": [a["resumed_from_step"] for a in attempts if a["resumed_from_step"] > 0],
        "best_global_step": state.get("best_global_step"),
        **{key: results[key] for key in metric_keys(PAPER_TASKS).values()},
        "train_loss": results.get("train_loss"),
        "surgery_granularity": flag_value(run.argv, "--surgery_granularity", "model") if summary["surgery"] else None,
        "machine": machine(),
        "gathered": datetime.now(UTC).isoformat(timespec="seconds"),
        **summary,
    }
    return record


# ---- Running ----


def execute(run: Run) -> int:
    """Runs (or resumes) one run as a subprocess from the repository root; records the attempt."""
    run.output_dir.parent.mkdir(parents=True, exist_ok=True)
    argv, checkpoint = attempt_argv(run)
    commit, dirty = git_state()
    attempts_file = run.attempts_file
    # Attempts whose output dir is gone left nothing: the record starts again with the dir.
    attempts = read_json(attempts_file, []) if run.output_dir.is_dir() else []
    attempt = {
        "command": run.command,
        "resumed_from_step": checkpoint_step(checkpoint) if checkpoint is not None else 0,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": dirty,
        "wall_time_s": None,
        "returncode": None,
        "train_runtime": None,
        "end_step": None,
    }
    attempts.append(attempt)
    write_json_atomically(attempts_file, attempts)
    log_file = run.log_file
    action = f"resuming from {checkpoint.name}" if checkpoint is not None else "starting"
    logger.info(f"{run.name}: {action}; log in {log_file}")
    start = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        with log_file.open("a") as log:
            log.write(f"\n$ {shlex.join(argv)}\n")
            log.flush()
            process = subprocess.run(
                [sys.executable, *argv[1:]], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, check=False
            )
        attempt["returncode"] = process.returncode
    finally:
        attempt["wall_time_s"] = round(time.time() - start, 1)
        train_results = run.output_dir / "train_results.json"
        state = run.output_dir / "trainer_state.json"
        if train_results.is_file() and train_results.stat().st_mtime >= start and state.is_file():
            attempt["train_runtime"] = read_json(train_results)["train_runtime"]
            attempt["end_step"] = read_json(state)["global_step"]
        write_json_atomically(attempts_file, attempts)
    if process.returncode != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-20:])
        logger.error(f"{run.name}: exit status {process.returncode}; the end of {log_file}:\n{tail}")
    return process.returncode


def log_to_stderr() -> None:
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s - experiments - %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def run_all(runs: list[Run], commit_label: str | None = None) -> dict:
    """
    Runs, resumes or gathers every run not done yet and writes its results JSON, committing it at once under
    `commit_label` when given. What happened: `{"ran": [...], "gathered": [...], "skipped": [...], "failed": [...]}`.
    """
    log_to_stderr()
    check_commands(runs)
    outcome = {"ran": [], "gathered": [], "skipped": [], "failed": []}
    for index, run in enumerate(runs, 1):
        state = run_state(run)
        if state == "done":
            outcome["skipped"].append(run.name)
            continue
        logger.info(f"[{index}/{len(runs)}] {run.command}")
        if state in ("start", "resume"):
            if execute(run) != 0 or not is_finished(run.output_dir):
                outcome["failed"].append(run.name)
                continue
            outcome["ran"].append(run.name)
        else:
            logger.info(f"{run.name}: finished in {run.output_dir}; gathering its results")
            outcome["gathered"].append(run.name)
        record = gather(run)
        run.results_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(run.results_file, record)
        logger.info(f"{run.name}: {OVERALL_KEY} {record[OVERALL_KEY]:.4f}; wrote {run.results_file}")
        if commit_label is not None:
            commit_results([run.results_file], f"{commit_label}: {run.name}, {OVERALL_KEY} {record[OVERALL_KEY]:.4f}")
    return outcome


def rows_parser(description: str, rows: dict, name: str) -> argparse.ArgumentParser:
    """The arguments of a script of rows: outputs/<name> and results/<name>, seeds, rows, the budget, what to do."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument("--output_dir", type=Path, default=REPO / "outputs" / name)
    parser.add_argument("--results_dir", type=Path, default=REPO / "results" / name)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", default=list(rows), choices=list(rows))
    parser.add_argument("--num_train_epochs", type=float, default=1.0)
    parser.add_argument("--dry_run", action="store_true")
    parser.add_argument("--table_only", action="store_true")
    parser.add_argument("--commit_results", action="store_true")
    return parser


def run_rows(args, runs: list[Run], label: str) -> dict:
    """A script of rows' work: `--dry_run` prints the commands; otherwise, unless `--table_only`, every run that is
    missing runs (each committed under `label` with `--commit_results`). The outcome, with `written` to fill."""
    outcome = {"ran": [], "gathered": [], "skipped": [], "failed": [], "written": []}
    if args.dry_run:
        for run in runs:
            print(run.command)
    elif not args.table_only:
        outcome.update(run_all(runs, label if args.commit_results else None))
    return outcome


def write_table(args, text: str, outcome: dict, message: str) -> Path:
    """A script of rows' `<results_dir>/table.md`, noted in `outcome["written"]`, committed with `--commit_results`."""
    table = args.results_dir / "table.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(text)
    outcome["written"].append(table)
    if args.commit_results:
        commit_results([table], message)
    return table
