"""What a stage leaves for the next one: ``distill.json`` in every model directory.

Stages share files, not classes. The teacher, student, export, bench and predict stages never
import each other; each model directory carries, as data, what any later stage needs to use it:

    role          teacher | student | student_ce (the CE-only control)
    task          classification (a label per text) | ner (a tag per word: token classification) |
                  lm (a causal language model: the next token)
    labels        id -> label name (the training split's label map; ner: the IOB2 tag map)
    max_length    tokens per example the model was trained and evaluated with (an export variant's
                  copy: the length export validated it at, which bench and predict then use)
    long_text     how a longer text was cut (distill.tokens.LongText: truncate, head_tail, chunks);
                  every stage that tokenises for this model reads it (missing in older files: truncate)
    data          the DataSpec of the rows it was trained on (its dev split is the evaluation set);
                  ner: the distill.ner_data.NerSpec of its sentences; lm: the distill.lm_data.LMDataSpec
    architecture  how it was built (base model and strategy, or student kind and layers kept)
    transfer      teacher only: the label-free sets scored into ``logits/``, name -> how to re-read them
    scorers       teacher only: which runtime scored each logit cache (distill/scoring.py; absent: pytorch),
                  part of that cache's fingerprint

``read_model_info`` is the one reader. A missing or unreadable file is a ``StageInputError`` that
names the file and the command that makes it.

Every run directory a stage made carries ``.distill-run`` (``claim_run_dir``, called by the stages
that can be the first to write into a run: inspect, teacher, strategies, distill, compare); ``make
clean`` removes only a directory that has it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from distill import layout
from distill.config import atomic_write_text
from distill.data import DataSpec
from distill.errors import PipelineError
from distill.lm_data import LMDataSpec
from distill.lock import LOCK_NAME, RUN_MARKER  # noqa: F401  (RUN_MARKER: this module's name for it too)
from distill.ner_data import NerSpec
from distill.tokens import LongText

MODEL_INFO = layout.MODEL_INFO
INFO_FORMAT = 1
ROLES = layout.ROLES
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
    long_text: LongText = field(default_factory=LongText)  # how a longer text was cut (written as a dict; {}: truncate)
    scorers: dict[str, str] = field(default_factory=dict)  # teacher: logit cache name -> what scored it (absent: pytorch)
    format: int = INFO_FORMAT

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def teacher_dir(self) -> Path | None:
        """The folder of the teacher a student was trained from (None: a teacher, or no record)."""
        teacher = self.architecture.get("teacher")
        return Path(teacher) if teacher else None



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
        return ModelInfo(**{**raw, "data": spec(**raw["data"]), "long_text": LongText.from_dict(raw.get("long_text"))})
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise StageInputError(path, f"unreadable ({err})", hint) from err


def claim_run_dir(run_dir: str | Path, *, stage: str) -> Path:
    """Create ``run_dir`` and mark as distill's (``RUN_MARKER``) every directory this call creates
    (``runs/new/inspect`` marks ``runs/new`` and ``inspect``), and ``run_dir`` itself when it is empty or
    holds only directories distill marked (``inspect/`` before the teacher stage runs). A directory
    that holds anything else (the user's own files, a run made before markers existed) is used as it
    is and stays unmarked, so ``make clean`` refuses to remove it. Safe to call from several
    processes at once (torchrun ranks). Returns ``run_dir``."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise StageInputError(run_dir, "not a directory (--run-dir / --out name the run's folder)")
    created = [d for d in (run_dir, *run_dir.parents) if not d.exists()]  # (deepest first)
    run_dir.mkdir(parents=True, exist_ok=True)
    for directory in created:
        _write_marker(directory, stage)
    others = [p for p in run_dir.iterdir() if p.name != RUN_MARKER]
    if all(p.is_dir() and not p.is_symlink() and ((p / RUN_MARKER).is_file() or _only_our_lock(p)) for p in others):
        _write_marker(run_dir, stage)
    return run_dir


def _only_our_lock(directory: Path) -> bool:
    """A stage folder whose lock (distill/lock.py) the calling stage just took: nothing else in it yet."""
    return {p.name for p in directory.iterdir()} == {LOCK_NAME}


def _write_marker(directory: Path, stage: str) -> None:
    """``directory``'s marker, unless it has one (O_EXCL: of two processes marking at once, one writes)."""
    note = (f"made by `python -m distill {stage}` on {_dt.datetime.now().isoformat(timespec='seconds')}; "
            f"`make clean RUN={directory}` removes this folder, and only folders with this file\n")
    try:
        fd = os.open(directory / RUN_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(note)
