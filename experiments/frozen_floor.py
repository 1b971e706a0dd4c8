# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The frozen-feature floor: what the pre-trained encoder gives without any fine-tuning, on the same splits.

    python -m experiments.frozen_floor                       # the packaged all-MiniLM-L6-v2, ../shared/data
    python -m experiments.frozen_floor --output results/recipe/frozen_floor.json

Every sentence is embedded once by the frozen encoder (attention-masked mean of the last hidden states, the pooling
all-MiniLM-L6-v2 was trained with). Then, on dev, for each of the paper's tasks by what its registry entry says:
- one sentence (SST): a logistic regression on the sentence embedding, fitted on train;
- a pair of classes (Quora): a logistic regression on `[u, v, |u - v|, u * v]`, fitted on train, and the zero-shot
  rule `cos(u, v) > t` with `t` chosen on train;
- a scored pair (STS): the zero-shot cosine `cos(u, v)` (Pearson is blind to scale), and a ridge regression on the
  pair features.
The regularisation strength is chosen by cross-validation on train only (3 folds, 6 values). Needs scikit-learn
(`pip install -e ".[experiments]"`).
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from transformers import AutoModel, AutoTokenizer

from run_multitask import default_model_path
from trainer.cs224n_builder import load_cs224n
from trainer.tasks import OVERALL, PAPER_TASKS, get_task


REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def embed(model, tokenizer, sentences: list[str], batch_size: int = 128) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings, computed longest first (little padding) and returned in order."""
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    result = np.zeros((len(sentences), model.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer(
            [sentences[i] for i in rows], padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1)
        result[rows] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    return result


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def fit_and_score(model, tokenizer, task, data) -> dict[str, float]:
    """`{<task>_<metric>_<method>: dev score, ..., "best": the best of them}` for one task (see the top)."""
    prefix, labels = f"{task.name}_{task.metric}", {}
    embeddings = {}
    for split in ("train", "validation"):
        rows = data[split]
        embeddings[split] = [embed(model, tokenizer, rows[column]) for column in task.text_columns]
        labels[split] = np.asarray(rows["label"])
    if task.num_texts == 1:
        x = {split: sentences[0] for split, sentences in embeddings.items()}
        classifier = LogisticRegressionCV(Cs=6, cv=3, max_iter=2000).fit(x["train"], labels["train"])
        score = float(classifier.score(x["validation"], labels["validation"]))
        return {f"{prefix}_logistic_regression": score, "best": score}
    cosine = {split: (u * v).sum(1) for split, (u, v) in embeddings.items()}
    features = {split: pair_features(u, v) for split, (u, v) in embeddings.items()}
    if not task.is_regression:
        classifier = LogisticRegressionCV(Cs=6, cv=3, max_iter=2000).fit(features["train"], labels["train"])
        fitted = float(classifier.score(features["validation"], labels["validation"]))
        thresholds = np.quantile(cosine["train"], np.linspace(0.01, 0.99, 197))
        train_accuracy = [((cosine["train"] > t) == labels["train"]).mean() for t in thresholds]
        threshold = float(thresholds[int(np.argmax(train_accuracy))])
        zero_shot = float(((cosine["validation"] > threshold) == labels["validation"]).mean())
        return {
            f"{prefix}_logistic_regression": fitted,
            f"{prefix}_zero_shot_cosine": zero_shot,
            f"{task.name}_cosine_threshold": threshold,
            "best": max(fitted, zero_shot),
        }
    zero_shot = float(pearsonr(cosine["validation"], labels["validation"])[0])
    ridge = RidgeCV(alphas=np.logspace(-2, 3, 11)).fit(features["train"], labels["train"])
    fitted = float(pearsonr(ridge.predict(features["validation"]), labels["validation"])[0])
    return {f"{prefix}_zero_shot_cosine": zero_shot, f"{prefix}_ridge": fitted, "best": max(zero_shot, fitted)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model_name_or_path", default=default_model_path())
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--output", type=Path, default=REPO / "results" / "recipe" / "frozen_floor.json")
    args = parser.parse_args(argv)
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = AutoModel.from_pretrained(args.model_name_or_path).eval()
    results, best = {}, {}
    for task in map(get_task, PAPER_TASKS):
        scores = fit_and_score(model, tokenizer, task, load_cs224n(task.name, args.data_dir))
        results.update({key: value for key, value in scores.items() if key != "best"})
        best[task.name] = scores["best"]
    record = {
        "command": shlex.join(
            ["python", "-m", "experiments.frozen_floor", *(argv if argv is not None else sys.argv[1:])]
        ),
        "model": "sentence-transformers/all-MiniLM-L6-v2"
        if args.model_name_or_path == default_model_path()
        else args.model_name_or_path,
        **results,
        "best": {**best, OVERALL: float(np.mean(list(best.values())))},
        "seconds": round(time.time() - start, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
