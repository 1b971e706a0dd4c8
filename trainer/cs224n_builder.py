# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
`datasets` builder for tasks stored as CS224N "minBERT" data files (SST-5, Quora, STS, CFIMDB, or any registered
[`~trainer.tasks.Task`] with `files`).

The files are tab-separated with a header row and an unnamed first column (a row index); see the data directory's
README.md. A task's files are `{task.files}-train.csv`, `-dev.csv` and `-test-student.csv` in `data_dir`, with the
columns `id`, the task's text columns and its `label_column`. The task name is the builder config:

| config | files                | text columns         | `label` feature           |
|--------|----------------------|----------------------|---------------------------|
| sst    | ids-sst-{split}.csv  | sentence             | ClassLabel(5), int64      |
| para   | quora-{split}.csv    | sentence1, sentence2 | ClassLabel(2), int64      |
| sts    | sts-{split}.csv      | sentence1, sentence2 | Value("float32"), 0 to 5  |
| cfimdb | ids-cfimdb-{split}.csv | sentence           | ClassLabel(2), int64      |

Every config also has `id` (`Value("string")`). Splits: `train` (`-train`), `validation` (`-dev`), `test`
(`-test-student`); `validation` and `test` exist only where their file exists. The test files carry no label column:
their rows get `label = None`. A test file that does have one is read the same way: the column is ignored (never
parsed, never a reason to skip a row), so that every test id gets a prediction.

Bad rows (an empty, unparsable or out-of-range label, a missing or empty sentence or id, a wrong number of fields, a
TAB inside a field: a sign of an unbalanced quote) are skipped and counted, with ONE warning per file (logger
`trainer.cs224n_builder`) naming the file, the number skipped and the first line numbers with their reasons. With
`strict=True` the first bad row raises `ValueError("<path>: line <n>: <reason>")`. Line numbers are physical line
numbers in the file, header = line 1 (for a record spanning several lines, its first line). A blank line counts as a
bad row. A train/dev file without its label column, or any file without `id` or a sentence column, raises
`ValueError` (a header problem, not a row problem) in both modes.

Ids: in a dev or test file an id must not repeat, since the prediction files are keyed by id. A repeat among the rows
kept raises `ValueError("<path>: line <n>: duplicate id '<id>' (first on line <m>) ...")` in both modes. A train file
may repeat an id (the id is not used in training).

Quotes: fields are read with standard CSV `"` quoting (the parse of `csv.DictReader(f, delimiter="\t")`). Quote
characters left inside the text after that (Quora questions wrapped in an extra layer of quoting, `"What does ""x""
mean?"`, 580 values in quora-train, or STS sentences with an unbalanced `"`) are kept verbatim, deliberately: the
course's reader keeps them too and the reference numbers were produced with them. The normalisation does not touch
`"`.

Usage (offline, no Hub, no dataset script):

```python
from trainer.cs224n_builder import load_cs224n

dataset = load_cs224n("sst", "/path/to/data")  # a DatasetDict, in memory

# or as a plain builder, cached in `cache_dir`:
builder = Cs224nBuilder(config_name="sst", data_dir=..., cache_dir=...)
builder.download_and_prepare()
dataset = builder.as_dataset()
```

Caching: the builder's cache directory depends on the task, `data_dir`, `normalize`, `strict` (config id) and on a
hash of the files' *contents* plus the parser revision, so variants never mix and edited files are re-read. When a
cached copy is reused, the bad-row warnings recorded at preparation time (stored next to the Arrow files) are emitted
again, so a cache hit is never silent.
"""

import csv
import dataclasses
import hashlib
import json
import os
import tempfile
from typing import Any

import datasets
from transformers.utils import logging

from .tasks import Task, get_task


logger = logging.get_logger(__name__)

# Bump when parsing/validation changes: it is part of the cache hash.
PARSER_REVISION = "3"
MAX_REPORTED_LINES = 5
SKIPPED_ROWS_FILENAME = "cs224n_skipped_rows.json"

SPLIT_SUFFIXES = {
    "train": "train",
    "validation": "dev",
    "test": "test-student",
}


def data_file(task: str | Task, split: str) -> str:
    """The file name of a split of `task`: `ids-sst-dev.csv` for ("sst", "validation")."""
    task = get_task(task) if isinstance(task, str) else task
    if task.files is None:
        raise ValueError(f"Task {task.name!r} has no CS224N files (its registry entry names no `files`).")
    return f"{task.files}-{SPLIT_SUFFIXES[split]}.csv"


def normalize_sentence(text: str) -> str:
    """The CS224N course's normalisation (lower-case, split off . ? , ' and collapse spaces)."""
    return " ".join(text.lower().replace(".", " .").replace("?", " ?").replace(",", " ,").replace("'", " '").split())


def format_bad_rows(
    source: str, bad: list[tuple[int, str]], total: int, *, cached_from: str | None = None, unit: str = "line"
) -> str:
    """One warning message for all the bad rows of one file or dataset (`unit`: "line" or "row")."""
    shown = "; ".join(f"{unit} {line}: {reason}" for line, reason in bad[:MAX_REPORTED_LINES])
    more = f"; ... ({len(bad) - MAX_REPORTED_LINES} more)" if len(bad) > MAX_REPORTED_LINES else ""
    note = f" [recorded when the cache {cached_from} was prepared]" if cached_from else ""
    return f"{source}: skipped {len(bad)} bad row(s) of {total}: {shown}{more}{note}"


def format_kept_rows(source: str, kept: list[tuple[int, str]], *, cached_from: str | None = None) -> str:
    """One warning for the unlabeled rows kept with an empty sentence (they are predicted on the empty string)."""
    shown = "; ".join(f"line {line}: {reason}" for line, reason in kept[:MAX_REPORTED_LINES])
    more = f"; ... ({len(kept) - MAX_REPORTED_LINES} more)" if len(kept) > MAX_REPORTED_LINES else ""
    note = f" [recorded when the cache {cached_from} was prepared]" if cached_from else ""
    return (
        f"{source}: kept {len(kept)} unlabeled row(s) with an empty sentence, so that every id gets a prediction "
        f"(made on the empty string): {shown}{more}{note}"
    )


def _files_fingerprint(task: Task, data_dir: str) -> str:
    h = hashlib.sha256(f"cs224n-parser-{PARSER_REVISION}".encode())
    for split in SPLIT_SUFFIXES:
        path = os.path.join(data_dir, data_file(task, split))
        h.update(split.encode())
        if os.path.isfile(path):
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
        else:
            h.update(b"<missing>")
    return h.hexdigest()[:16]


def check_unique_ids(source: str, ids: list[tuple[int, str]], *, unit: str = "line") -> None:
    """A `ValueError` at the first repeated id of `ids`, a list of `(line_or_row, id)` (`unit`: "line" or "row")."""
    first: dict[str, int] = {}
    for where, ident in ids:
        if ident in first:
            raise ValueError(
                f"{source}: {unit} {where}: duplicate id {ident!r} (first on {unit} {first[ident]}); ids of a "
                "validation or test split must be unique, as the predictions are written by id"
            )
        first[ident] = where


def check_utf8(path: str) -> None:
    """A `ValueError` naming the file, line and column of the first byte that is not UTF-8."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(
            f"{path}: line {line}: byte 0x{data[e.start]:02x} at column {column} is not UTF-8 ({e.reason}); "
            "save the file as UTF-8"
        ) from None


def read_cs224n_file(
    path: str,
    task: str,
    *,
    normalize: bool = True,
    strict: bool = False,
    require_label: bool = True,
    kept: list[tuple[int, str]] | None = None,
) -> tuple[list[tuple[int, dict]], list[tuple[int, str]], int]:
    """
    Reads one CS224N file of `task`: `(examples, bad_rows, total_rows)`, with `examples` a list of `(line_number,
    example)` and `bad_rows` a list of `(line_number, reason)`. Header problems (a required column missing) and
    bytes that are not UTF-8 always raise a `ValueError`; bad rows raise one only when `strict`. No logging here.

    `require_label=False` (a test split): the label is not used; its column may be missing and, if present, is not
    read (every label is `None`). In such a file a row with an empty sentence is kept, with the empty string as its
    text, so that every id gets a prediction; the `(line, reason)` of each such row is appended to `kept` when given.
    """
    spec = get_task(task)
    examples: list[tuple[int, dict]] = []
    bad: list[tuple[int, str]] = []
    total = 0
    check_utf8(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        # csv.reader with the same dialect as csv.DictReader(f, delimiter="\t"); used directly so that
        # blank lines and short/long rows are seen (DictReader skips blank lines silently).
        reader = csv.reader(f, delimiter="\t")
        header, index = _read_header(reader, path, spec, require_label)
        prev_end = reader.line_num
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as e:
                raise ValueError(f"{path}: line {prev_end + 1}: unreadable CSV ({e})") from e
            start, end = prev_end + 1, reader.line_num
            prev_end = end
            total += 1
            where = f"line {start}" if start == end else f"line {start} (record spans lines {start}-{end})"
            # A test split's label is never used: a label column there must not make rows bad (and lose their ids).
            example, reasons, notes = _parse_row(fields, header, index, spec, normalize, has_label=require_label)
            reason = "; ".join(reasons)
            if reason:
                if strict:
                    raise ValueError(f"{path}: {where}: {reason}")
                bad.append((start, reason))
                continue
            if notes and kept is not None:
                kept.append((start, "; ".join(notes)))
            examples.append((start, example))
    return examples, bad, total


def _read_header(reader, path: str, spec, require_label: bool) -> tuple[list[str], dict[str, int]]:
    """The header row and the index of each column; a `ValueError` if it lacks a column the rows need."""
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{path}: empty file (no header row)") from None
    index = {name: i for i, name in enumerate(header)}
    needed = ["id", *spec.text_columns, *([spec.label_column] if require_label else [])]
    missing = [c for c in needed if c not in index]
    if missing:
        raise ValueError(f"{path}: line 1 (header): missing column(s) {missing}; header is {header}")
    return header, index


def _parse_row(
    fields: list[str], header: list[str], index: dict[str, int], spec, normalize: bool, has_label: bool
) -> tuple[dict[str, Any], list[str], list[str]]:
    """One record as `(example, reasons, notes)`: it is bad if `reasons` is not empty; `notes` keep it."""
    reasons: list[str] = []
    notes: list[str] = []
    example: dict[str, Any] = {}
    if not fields:
        return example, ["blank line"], notes
    if len(fields) != len(header):
        return example, [f"expected {len(header)} fields, found {len(fields)}"], notes
    ident = fields[index["id"]].strip()
    if not ident:
        reasons.append("empty id")
    elif "\t" in ident:
        reasons.append("tab inside the id field (unbalanced quote?)")
    example["id"] = ident
    for col in spec.text_columns:
        raw = fields[index[col]]
        text = normalize_sentence(raw) if normalize else raw.strip()
        if "\t" in raw:
            reasons.append(f"tab inside {col!r} (unbalanced quote?)")
        elif not text:
            (reasons if has_label else notes).append(f"empty {col!r}")
        example[col] = text
    example["label"] = None
    if has_label:
        label, label_problem = spec.parse_label(fields[index[spec.label_column]])
        if label_problem:
            reasons.append(label_problem)
        example["label"] = label
    return example, reasons, notes


@dataclasses.dataclass
class Cs224nConfig(datasets.BuilderConfig):
    """
    Builder config of one task (its name is the task's).

    Args:
        normalize (`bool`, defaults to `True`):
            Apply the course's normalisation (`normalize_sentence`); `False` keeps sentences as in the file, stripped.
        strict (`bool`, defaults to `False`):
            Raise a `ValueError` (file path, line, reason) on the first bad row instead of skipping and counting it.
    """

    normalize: bool = True
    strict: bool = False


class Cs224nBuilder(datasets.GeneratorBasedBuilder):
    """Builds `DatasetDict`s from the CS224N files in `data_dir` (see the module docstring)."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = Cs224nConfig
    # No fixed configs: any registered task with files is one (`datasets` builds the config from its name).
    BUILDER_CONFIGS = []

    def __init__(
        self,
        cache_dir: str | None = None,
        dataset_name: str | None = None,
        config_name: str | None = None,
        hash: str | None = None,
        *,
        data_dir: str | None = None,
        **kwargs,
    ):
        spec = get_task(config_name)
        if data_dir is None:
            raise ValueError("data_dir is required: the directory holding the CS224N .csv files")
        data_dir = os.path.abspath(os.fspath(data_dir))
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(f"CS224N data directory not found: {data_dir}")
        train = os.path.join(data_dir, data_file(spec, "train"))
        if not os.path.isfile(train):
            raise FileNotFoundError(f"CS224N {spec.name} train file not found: {train}")
        # Make the options explicit so that they always enter the config id (cache directory).
        for key, default in (("normalize", True), ("strict", False)):
            value = kwargs.get(key)
            kwargs[key] = default if value is None else bool(value)
        if hash is None:
            hash = _files_fingerprint(spec, data_dir)
        self.skipped_rows: dict[str, list[tuple[int, str]]] = {}
        self._prepared_now = False
        super().__init__(
            cache_dir=cache_dir,
            dataset_name=dataset_name,
            config_name=config_name,
            hash=hash,
            data_dir=data_dir,
            **kwargs,
        )

    @property
    def task(self) -> Task:
        return get_task(self.config.name)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.task.description,
            features=self.task.features(),
            homepage="https://github.com/gpoesia/minbert-default-final-project",
        )

    def _split_generators(self, dl_manager):
        # Parse and validate everything here (not in _generate_examples) so that strict-mode
        # ValueErrors reach the caller unwrapped (datasets wraps generator errors).
        self._parsed: dict[str, list[tuple[int, dict]]] = {}
        self.skipped_rows = {}
        self._reports: list[dict] = []
        generators = []
        for split, hf_split in (
            ("train", datasets.Split.TRAIN),
            ("validation", datasets.Split.VALIDATION),
            ("test", datasets.Split.TEST),
        ):
            path = os.path.join(self.config.data_dir, data_file(self.task, split))
            if not os.path.isfile(path):
                if split == "train":
                    raise FileNotFoundError(f"CS224N {self.task.name} train file not found: {path}")
                continue
            kept: list[tuple[int, str]] = []
            examples, bad, total = read_cs224n_file(
                path,
                self.config.name,
                normalize=self.config.normalize,
                strict=self.config.strict,
                require_label=(split != "test"),
                kept=kept,
            )
            if split != "train":  # duplicate ids would make the prediction file ambiguous
                check_unique_ids(path, [(line, example["id"]) for line, example in examples])
            if not examples:  # `datasets` would only say: Instruction "train" corresponds to no data!
                if not total:
                    raise ValueError(f"{path}: no data rows, only a header line")
                raise ValueError(f"{path}: no usable rows; {format_bad_rows(path, bad, total)}")
            if bad:
                logger.warning(format_bad_rows(path, bad, total))
            if kept:
                logger.warning(format_kept_rows(path, kept))
            self._reports.append({"split": split, "path": path, "total": total, "bad": bad, "kept": kept})
            self.skipped_rows[split] = bad
            self._parsed[path] = examples
            generators.append(datasets.SplitGenerator(name=hf_split, gen_kwargs={"filepath": path}))
        self._prepared_now = True
        return generators

    def _generate_examples(self, filepath):
        yield from self._parsed[filepath]

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        # self._output_dir is the (temporary, later renamed) output directory here.
        with open(os.path.join(self._output_dir, SKIPPED_ROWS_FILENAME), "w", encoding="utf-8") as f:
            json.dump(self._reports, f)
        self._parsed = {}

    def download_and_prepare(self, *args, **kwargs):
        """As in `datasets`; on a cache hit, re-emits the bad-row warnings recorded at preparation."""
        self._prepared_now = False
        super().download_and_prepare(*args, **kwargs)
        if self._prepared_now:
            return
        report_path = os.path.join(self._output_dir, SKIPPED_ROWS_FILENAME)
        if not os.path.isfile(report_path):
            logger.warning(f"{self._output_dir}: cached CS224N data has no bad-row record ({SKIPPED_ROWS_FILENAME})")
            return
        with open(report_path, encoding="utf-8") as f:
            reports = json.load(f)
        self.skipped_rows = {}
        for rep in reports:
            bad = [tuple(b) for b in rep["bad"]]
            self.skipped_rows[rep["split"]] = bad
            if bad:
                logger.warning(format_bad_rows(rep["path"], bad, rep["total"], cached_from=self._output_dir))
            if rep.get("kept"):
                kept = [tuple(k) for k in rep["kept"]]
                logger.warning(format_kept_rows(rep["path"], kept, cached_from=self._output_dir))


def load_cs224n(
    task: str,
    data_dir: str | os.PathLike,
    normalize: bool = True,
    strict: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """
    One task from its CS224N files, as a `DatasetDict` (splits train, validation and test where present).

    `cache_dir=None` (default): prepare into a fresh temporary directory, load the splits into memory and delete the
    directory: no cache, every call re-reads the files and re-warns. With a `cache_dir`: the usual `datasets` cache
    (memory-mapped Arrow files), keyed by options and file contents; warnings are replayed on cache hits.
    """
    get_task(task)
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="cs224n_") as tmp:
            builder = Cs224nBuilder(
                config_name=task, data_dir=data_dir, cache_dir=tmp, normalize=normalize, strict=strict
            )
            # Reading these small files takes a fraction of a second: no "Generating ... split" progress bars.
            was_disabled = datasets.utils.are_progress_bars_disabled()
            datasets.utils.disable_progress_bars()
            try:
                builder.download_and_prepare()
            finally:
                if not was_disabled:
                    datasets.utils.enable_progress_bars()
            return builder.as_dataset(in_memory=True)
    builder = Cs224nBuilder(
        config_name=task, data_dir=data_dir, cache_dir=os.fspath(cache_dir), normalize=normalize, strict=strict
    )
    builder.download_and_prepare()
    return builder.as_dataset()
