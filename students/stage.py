"""What the student stage's one skeleton asks of a task, and the steps both tasks run alike.

``students/distill.py``'s ``train_student`` is the skeleton, for classification and NER alike: the
task's settings (checked; the CE-only control's), the opening (``open_stage``: the process group,
the teacher's ``distill.json`` and data, the rows held back to choose checkpoints on), the task's
named steps in order (rows, model, encode_rows, online teacher, loss, evaluate), the loop
(``distill.trainer.train``), and the report (the task's figures, ``stage_figures`` and
``distill.trainer.loop_figures``). A task is one
object with those steps as methods (``StudentTask``): ``students.distill.CLASSIFICATION`` and
``students.ner.NER``; ``students.distill.student_task`` is the one dispatch between them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from distill import layout
from distill.artifacts import ModelInfo, read_model_info
from distill.config import ConfigError
from distill.data import Dataset, Split
from distill.ner_data import NerDataset, TokenSplit
from distill.tokens import LongText
from distill.trainer import holdout_indices, setup_distributed
from students.config import StudentConfig

# the loop's loss: (the model's outputs, the batch's row indices (B,), the batch) -> (loss, terms to log)
LossFn = Callable[[Any, np.ndarray, dict], tuple[torch.Tensor, dict]]


@dataclass
class StageInputs:
    """What the opening of a student run read (``open_stage``), the same for both tasks."""

    teacher_dir: Path  # the teacher stage's output
    teacher: ModelInfo  # its distill.json
    data: Dataset | NerDataset  # the teacher's data (its labels checked against distill.json's)
    kept: np.ndarray  # (N_kept,) int indices of the training rows the student learns from
    eval_rows: Split | TokenSplit  # the rows checkpoints are chosen on: the held-back training rows, or dev
    eval_name: str  # which of the two: holdout | dev
    out: Path  # the run's output folder (<run-dir>/student or <run-dir>/student_ce)
    device: torch.device  # where the student trains
    rank: int  # this process's rank (0 without torchrun)

    @property
    def store(self) -> Path:
        """The run's token stores (distill/tokens.py; trim_vocab's vocabulary), dropped when it is done."""
        return self.out / "tokens"


@dataclass
class Student:
    """The model step's student, as it is saved."""

    model: nn.Module  # the student (a task's loss step may wrap it; only this is saved)
    tokenizer: Any  # its tokenizer, saved beside it
    description: dict  # how students/build.py made it: metrics.json's "student", distill.json's architecture
    long_text: LongText  # how it reads rows over max_length (distill.json's long_text; ner: truncate)
    figures: dict  # what building it reports in metrics.json (trim_vocab's counts; {} when none)


class TrainingRows(Protocol):
    """What the skeleton reads of a task's rows step."""

    labelled: int  # the first rows, with labels
    transfer_sets: list[str]  # the teacher's transfer sets read, in order

    @property
    def transfer_rows(self) -> int:  # the rows after the labelled ones: KD-only or pseudo-labelled
        ...


class EncodedRows(Protocol):
    """What the skeleton reads of a task's encode step."""

    @property
    def train(self) -> Any:  # what the loop batches (distill.tokens.Encoded)
        ...


class StudentTask(Protocol):
    """The task-specific parts of the student stage, in the order the skeleton runs them."""

    presets: dict[str, StudentConfig]  # the --preset choices for a teacher of this task
    unit: str  # a training row in the printed plan: rows | sentences
    speed_unit: str  # what the done line's training speed counts: samples | sentences

    def settings(self, cfg: StudentConfig, *, role: str) -> StudentConfig:
        """The run's settings for ``role`` (the CE-only control: ``control_settings``), checked."""

    def load_data(self, teacher: ModelInfo, *, teacher_dir: Path) -> Dataset | NerDataset:
        """The teacher's data, its labels checked against the teacher's (``check_labels``)."""

    def rows(self, cfg: StudentConfig, inputs: StageInputs) -> TrainingRows:
        """The training rows and where the teacher's scores of each are (caches checked)."""

    def model(self, cfg: StudentConfig, inputs: StageInputs, rows: TrainingRows) -> Student:
        """The student and its tokenizer."""

    def encode(self, cfg: StudentConfig, inputs: StageInputs, rows: TrainingRows, student: Student) -> EncodedRows:
        """The training, checkpoint-choice and dev rows in the student's tokens."""

    def online_teacher(self, cfg: StudentConfig, inputs: StageInputs, rows: TrainingRows, student: Student) -> Any:
        """The teacher that runs every step (None: the cached scores are all the loss reads)."""

    def loss(self, cfg: StudentConfig, inputs: StageInputs, rows: TrainingRows, student: Student,
             sets: EncodedRows, teacher: Any) -> tuple[nn.Module, LossFn]:
        """The module the loop trains (the student, or a wrapper of it) and its loss."""

    def evaluate(self, cfg: StudentConfig, inputs: StageInputs, sets: EncodedRows) -> Callable[[nn.Module], dict]:
        """The loop's evaluation on the rows checkpoints are chosen on."""

    def plan(self, cfg: StudentConfig, inputs: StageInputs, rows: TrainingRows, sets: EncodedRows) -> str:
        """The task's part of the plan line printed before the loop."""

    def report(self, cfg: StudentConfig, inputs: StageInputs, rows: TrainingRows, student: Student,
               sets: EncodedRows, best: nn.Module) -> dict:
        """The task's part of metrics.json: the best checkpoint's dev metrics first."""

    def scores(self, result: dict) -> str:
        """The dev scores of the done line."""


def open_stage(cfg: StudentConfig, task: StudentTask, *, teacher_dir: Path, out: Path) -> StageInputs:
    """The opening both tasks share: join the process group, read the teacher's distill.json and
    its data, draw the held-back rows (the teacher's: the data seed draws them)."""
    device = setup_distributed(cfg.device)
    teacher = read_model_info(teacher_dir, hint="make teacher")
    data = task.load_data(teacher, teacher_dir=teacher_dir)
    kept, held = holdout_indices(len(data.train), cfg.holdout_rows, seed=teacher.data.seed)
    eval_rows, eval_name = (data.train.subset(held), "holdout") if len(held) else (data.dev, "dev")
    return StageInputs(teacher_dir=teacher_dir, teacher=teacher, data=data, kept=kept, eval_rows=eval_rows,
                       eval_name=eval_name, out=out, device=device,
                       rank=dist.get_rank() if dist.is_initialized() else 0)


def check_labels(teacher_dir: Path, expected: list[str], found: list[str], *, what: str) -> None:
    """Raise ``ConfigError`` when the data's labels (ner: tags) are no longer the teacher's."""
    if found != expected:
        raise ConfigError(f"{teacher_dir / 'distill.json'}: {what} {expected} but the data now has {found}")


def rank0_first(rank: int, build: Callable[[], Any]) -> Any:
    """``build()`` on rank 0 first, then on every other rank of a torchrun job: a token store under the
    run's folder is written once, by rank 0, and the others find it built instead of writing it too."""
    if rank != 0 and dist.is_initialized():
        dist.barrier()
    out = build()
    if rank == 0 and dist.is_initialized():
        dist.barrier()
    return out


@dataclass(frozen=True)
class RunPlan:
    """What a student run was planned to do: what ``--ce_schedule=matched`` gives its control."""
    total_steps: int  # optimizer steps over the whole run
    planned_evals: int  # checkpoint evaluations over the whole run (distill/trainer.py planned_evals)


@dataclass(frozen=True)
class ControlSchedule:
    """A CE-only control's schedule (compare's ce arm, or make distill's student_ce)."""
    epochs: int | None  # passes over its labelled rows (None: the preset's)
    evals: int | None  # evaluations over the whole run (None: the preset's evals_per_epoch in every epoch)
    why: str  # one line for the log


def matched_schedule(*, steps: int, evals: int, steps_per_epoch: int, floor: int | None, name: str) -> ControlSchedule:
    """The control matched to a run planned for ``steps`` optimizer steps and ``evals`` evaluations
    (``name``: which run, for the log line): enough passes over its own rows (``steps_per_epoch`` a
    pass) that its lr schedule spans at least those steps, and as many evaluations spread over
    them; at least ``floor`` epochs (None: no floor), and when the floor decides, its preset's
    evaluations per epoch. Equal steps and checkpoint choices: a control given fewer flatters KD
    (4 epochs over 500 labelled rows never left the majority class while KD read 20,000 rows), one
    evaluated every few steps pays for it (128 short epochs at 4 evaluations each made 512)."""
    matched = -(-steps // max(steps_per_epoch, 1))
    if floor is not None and floor > matched:
        return ControlSchedule(floor, None, f"{floor} epochs (the floor; {name} was given {steps} steps)")
    return ControlSchedule(matched, evals, f"{matched} epochs and {evals} evaluations: the {steps} steps and the "
                           f"evaluations {name} was given")


def control_settings(cfg: StudentConfig, **more: Any) -> StudentConfig:
    """The CE-only control's settings: the labelled rows, CE only, its own epochs and early stopping
    (``--ce_epochs``, ``--ce_patience``, for every task); ``more``: the task's further changes."""
    return dataclasses.replace(cfg, w_kd=0.0, w_ce=1.0, use_transfer=False, pseudo_labels=False,
                               epochs=cfg.ce_epochs or cfg.epochs, patience=cfg.ce_patience, **more)


def transfer_names(cfg: StudentConfig, inputs: StageInputs) -> list[str]:
    """The teacher's transfer sets the student reads (``--transfer``, else every one it scored;
    none with ``--use_transfer=false``), each checked to be one the teacher scored."""
    scored = inputs.teacher.transfer
    names = (cfg.transfer or list(scored)) if cfg.use_transfer else []
    unknown = [n for n in names if n not in scored]
    if unknown:
        raise ConfigError(f"--transfer={unknown[0]}: the teacher scored no transfer set of that name (it has: "
                          f"{', '.join(scored) or 'none'}; see {inputs.teacher_dir / layout.MODEL_INFO})")
    return names


def plan_line(cfg: StudentConfig, task: StudentTask, inputs: StageInputs, rows: TrainingRows, *,
              student: Student, sets: EncodedRows) -> str:
    """The line printed before the loop: the student, its rows, then the task's part, the device."""
    from distill.modeling import count_parameters

    return (f"{inputs.out.name}: {', '.join(f'{k}={v}' for k, v in student.description.items())} | "
            f"{count_parameters(student.model)['parameters']:,} parameters | {rows.labelled} labelled + "
            f"{rows.transfer_rows} {'pseudo-labelled' if cfg.pseudo_labels else 'KD-only'} {task.unit} "
            f"({', '.join(rows.transfer_sets) or 'no transfer set'}){task.plan(cfg, inputs, rows, sets)} | "
            f"{inputs.device}")


def stage_figures(cfg: StudentConfig, inputs: StageInputs, rows: TrainingRows, *, student: Student,
                  summary: dict, role: str) -> dict:
    """The part of metrics.json both tasks write alike (besides ``loop_figures``)."""
    return {"role": role, "student": student.description, "w_kd": cfg.w_kd, "w_ce": cfg.w_ce,
            "temperature": cfg.temperature, "train_rows": rows.labelled + rows.transfer_rows,
            "labelled_rows": rows.labelled, "transfer_rows": rows.transfer_rows, "transfer": list(rows.transfer_sets),
            "pseudo_labels": cfg.pseudo_labels, "checkpoint_chosen_on": inputs.eval_name,
            "eval_rows": len(inputs.eval_rows), "seed": cfg.seed, "samples_seen": summary["samples_seen"],
            "steps_done": summary["step"], "world_size": summary["world_size"], "device": str(inputs.device)}


def close_stage(run_dir: Path) -> int:
    """The stage's end, any task: leave the process group (torchrun), then rank 0 writes the run's
    report.md (distill/report.py). Returns main's exit status."""
    if dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    from distill.report import write_report

    print(f"report: {write_report(run_dir)}")
    return 0
