"""What every training stage (teacher and student, classification and NER) does when its model is done."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from distill import layout
from distill.config import atomic_write_text
from distill.model_card import write_card


def finish_stage(out: Path, result: dict) -> None:
    """Write ``out/metrics.json`` (atomically), then the model card from it and the folder's other
    JSON files (README.md, distill/model_card.py), then drop the resume checkpoint: the model is
    complete, so its resume state is no longer needed; it goes last, so that a crash before it
    leaves a run that can resume."""
    atomic_write_text(out / layout.METRICS_FILE, json.dumps(result, indent=2) + "\n")
    write_card(out)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
