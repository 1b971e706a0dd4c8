#!/usr/bin/env python
# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The frozen-feature floor: what the pre-trained encoder gives without any fine-tuning, on the same splits.

    python experiments/frozen_floor.py                       # the packaged all-MiniLM-L6-v2, ../shared/data
    python experiments/frozen_floor.py --output results/recipe/frozen_floor.json

Every sentence is embedded once by the frozen encoder (attention-masked mean of the last hidden states, the pooling
all-MiniLM-L6-v2 was trained with). Then, on dev:
- SST: a logistic regression on the sentence embedding, fitted on train;
- Quora: a logistic regression on `[u, v, |u - v|, u * v]`, fitted on train, and the zero-shot rule `cos(u, v) > t`
  with `t` chosen on train;
- STS: the zero-shot cosine `cos(u, v)` (Pearson is blind to scale), and a ridge regression on the pair features.
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


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from run_multitask import default_model_path  # noqa: E402
from trainer.cs224n_builder import load_cs224n  # noqa: E402


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
    data = {task: load_cs224n(task, args.data_dir) for task in ("sst", "para", "sts")}
    results = {}

    sst = {split: data["sst"][split] for split in ("train", "validation")}
    x = {split: embed(model, tokenizer, rows["sentence"]) for split, rows in sst.items()}
    classifier = LogisticRegressionCV(Cs=6, cv=3, max_iter=2000).fit(x["train"], sst["train"]["label"])
    results["sst_accuracy_logistic_regression"] = float(classifier.score(x["validation"], sst["validation"]["label"]))

    for task in ("para", "sts"):
        pairs = {}
        for split in ("train", "validation"):
            rows = data[task][split]
            u, v = embed(model, tokenizer, rows["sentence1"]), embed(model, tokenizer, rows["sentence2"])
            pairs[split] = (u, v, np.asarray(rows["label"]))
        cosine = {split: (u * v).sum(1) for split, (u, v, _) in pairs.items()}
        features = {split: pair_features(u, v) for split, (u, v, _) in pairs.items()}
        labels = {split: labels for split, (_, _, labels) in pairs.items()}
        if task == "para":
            classifier = LogisticRegressionCV(Cs=6, cv=3, max_iter=2000).fit(features["train"], labels["train"])
            results["para_accuracy_logistic_regression"] = float(
                classifier.score(features["validation"], labels["validation"])
            )
            thresholds = np.quantile(cosine["train"], np.linspace(0.01, 0.99, 197))
            train_accuracy = [((cosine["train"] > t) == labels["train"]).mean() for t in thresholds]
            threshold = float(thresholds[int(np.argmax(train_accuracy))])
            results["para_accuracy_zero_shot_cosine"] = float(
                ((cosine["validation"] > threshold) == labels["validation"]).mean()
            )
            results["para_cosine_threshold"] = threshold
        else:
            results["sts_pearson_zero_shot_cosine"] = float(pearsonr(cosine["validation"], labels["validation"])[0])
            ridge = RidgeCV(alphas=np.logspace(-2, 3, 11)).fit(features["train"], labels["train"])
            results["sts_pearson_ridge"] = float(
                pearsonr(ridge.predict(features["validation"]), labels["validation"])[0]
            )

    best = {
        "sst": results["sst_accuracy_logistic_regression"],
        "para": max(results["para_accuracy_logistic_regression"], results["para_accuracy_zero_shot_cosine"]),
        "sts": max(results["sts_pearson_zero_shot_cosine"], results["sts_pearson_ridge"]),
    }
    record = {
        "command": shlex.join(
            ["python", "experiments/frozen_floor.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "model": "sentence-transformers/all-MiniLM-L6-v2"
        if args.model_name_or_path == default_model_path()
        else args.model_name_or_path,
        **results,
        "best": {**best, "overall": float(np.mean(list(best.values())))},
        "seconds": round(time.time() - start, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
