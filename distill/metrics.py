"""Classification metrics from logits: accuracy, macro-F1, per-class P/R/F1, confusion matrix."""

from __future__ import annotations

import numpy as np


def classification_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
    """logits: (R, C) float; labels: (R,) int64 in [0, C). Returns a JSON-ready dict."""
    num_classes = len(label_names)
    predictions = logits.argmax(axis=-1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # [true, predicted]
    np.add.at(confusion, (labels, predictions), 1)
    per_class = {}
    f1s = []
    for c, name in enumerate(label_names):
        tp = confusion[c, c]
        predicted = confusion[:, c].sum()
        actual = confusion[c, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(actual),
        }
        f1s.append(f1)
    return {
        "accuracy": float((predictions == labels).mean()) if len(labels) else 0.0,
        "macro_f1": float(np.mean(f1s)),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "examples": int(len(labels)),
    }
