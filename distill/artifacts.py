"""What a stage leaves for the next one: ``distill.json`` in every model directory.

Stages share files, not classes. The teacher, student, export, bench and predict stages never
import each other; each model directory carries, as data, what any later stage needs to use it:

    role          teacher | student | student_ce (the CE-only control)
    task          classification (a label per text) | ner (a tag per word: token classification) |
                  lm (a causal language model: the next token)
    labels        id -> label name (the training split's label map; ner: the IOB2 tag map)
    max_length    tokens per example the model was trained and evaluated with
    long_text     how a longer text was cut (distill.tokens.LongText: truncate, head_tail, chunks);
                  every stage that tokenises for this model reads it (missing in older files: truncate)
    data          the DataSpec of the rows it was trained on (its dev split is the evaluation set);
                  ner: the distill.ner_data.NerSpec of its sentences; lm: the distill.lm_data.LMDataSpec
    architecture  how it was built (base model and strategy, or student kind and layers kept)
    transfer      teacher only: the label-free sets scored into ``logits/``, name -> how to re-read them

``read_model_info`` is the one reader. A missing or unreadable file is a ``StageInputError`` that
names the file and the command that makes it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from distill.config import atomic_write_text
from distill.data import DataSpec
from distill.errors import PipelineError
from distill.lm_data import LMDataSpec
from distill.ner_data import NerSpec
from distill.tokens import LongText

MODEL_INFO = "distill.json"
INFO_FORMAT = 1
ROLES = ("teacher", "student", "student_ce")
MAKES = {"teacher": "make teacher", "student": "make distill", "student_ce": "make distill",
         "onnx": "make export", "bench": "make bench"}  # the command that writes each stage's output


class StageInputError(FileNotFoundError, PipelineError):
    """A stage's input (another stage's output) is missing or unreadable. The message names the
    path, the problem and the command that makes it."""

    def __init__(self, path: str | Path, problem: str, hint: str | None = None):
        message = f"{path}: {problem}" + (f" (run `{hint}` first)" if hint else "")
        super().__init__(message)
        self.path, self.problem, self.hint = str(path), problem, hint

    def __str__(self) -> str:  # FileNotFoundError's own str() shows errno fields, not the message
        return self.args[0]


@dataclass
class ModelInfo:
    role: str  # teacher | student | student_ce
    task: str  # classification | ner | lm
    labels: list[str]  # id -> label name (ner: IOB2 tag)
    max_length: int  # tokens per example (truncation) used in training and evaluation
    data: DataSpec | NerSpec | LMDataSpec  # the rows it was trained on (ner: NerSpec, lm: LMDataSpec)
    architecture: dict = field(default_factory=dict)  # base model, strategy or student kind, layers ...
    transfer: dict[str, dict] = field(default_factory=dict)  # teacher: scored label-free sets, name -> source
    long_text: dict = field(default_factory=dict)  # distill.tokens.LongText as a dict ({}: truncate, as older files)
    format: int = INFO_FORMAT

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def long_text_settings(self) -> LongText:
        return LongText.from_dict(self.long_text)


def write_model_info(directory: Path, info: ModelInfo) -> Path:
    path = Path(directory) / MODEL_INFO
    atomic_write_text(path, json.dumps(dataclasses.asdict(info), indent=2, sort_keys=True) + "\n")
    return path


def read_model_info(directory: str | Path, *, hint: str | None = None) -> ModelInfo:
    """The ``distill.json`` of a model directory. ``hint``: the command that makes this directory
    (default: guessed from its name, e.g. ``teacher`` -> ``make teacher``)."""
    directory = Path(directory)
    path = directory / MODEL_INFO
    hint = hint or MAKES.get(directory.name)
    if not directory.is_dir():
        raise StageInputError(directory, "no such model directory", hint)
    if not path.is_file():
        raise StageInputError(path, "missing: no finished model here", hint)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != INFO_FORMAT:
            raise ValueError(f"format {raw.get('format')}, this code reads {INFO_FORMAT}")
        unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(ModelInfo)})
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        spec = {"ner": NerSpec, "lm": LMDataSpec}.get(raw.get("task"), DataSpec)
        return ModelInfo(**{**raw, "data": spec(**raw["data"])})
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise StageInputError(path, f"unreadable ({err})", hint) from err
