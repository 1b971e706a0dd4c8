"""Prediction files in the CS224N course's submission format."""

from pathlib import Path

# The course grader's column names, typo included.
PREDICTION_COLUMNS = {
    "sst": "Predicted_Sentiment",
    "para": "Predicted_Is_Paraphrase",
    "sts": "Predicted_Similiarity",
    "cfimdb": "Predicted_Sentiment",
}


def write_predictions(path: Path, task: str, ids, predictions) -> Path:
    """Writes `id \\t Predicted_... ` then one `id , prediction` line per example, as the course's starter code."""
    if len(ids) != len(predictions):
        raise ValueError(f"{path}: {len(ids)} ids but {len(predictions)} predictions.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"id \t {PREDICTION_COLUMNS[task]} \n")
        for example_id, prediction in zip(ids, predictions):
            f.write(f"{example_id} , {prediction.item() if hasattr(prediction, 'item') else prediction} \n")
    return path


def read_predictions(path: Path) -> dict[str, str]:
    """The inverse of `write_predictions`: {id: prediction}."""
    with open(path) as f:
        next(f)
        rows = [line.rsplit(" , ", 1) for line in f if line.strip()]
    return {example_id.strip(): value.strip() for example_id, value in rows}
