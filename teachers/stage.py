"""The teacher stage's skeleton, one for both tasks that fine-tune a classifier head
(classification: ``teachers/finetune.py``'s ``ClassificationTeacher``; NER: ``teachers/ner.py``'s
``NerTeacher``):

    open      device and seed, the data read before anything is written, the run folder claimed,
              the transfer sets (a finished teacher's earlier sets kept)
    model     the task's model under the strategy (full, top-n, frozen, LoRA)
    rows      the holdout taken out, the rows encoded for the model (the task's), the opening lines
    train     the loop of distill/trainer.py, or a finished teacher reused as it is
    close     the caches scored by the best checkpoint as saved (the weights their fingerprints
              hash), distill.json, metrics.json and the model card (distill/stage.py)

What differs by task is a ``TeacherTask``: its data, transfer sets, model, encoded rows, loss,
evaluation, scoring and metrics. ``teachers/finetune.py``'s ``run`` picks the task.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from distill import layout
from distill.artifacts import ModelInfo, claim_run_dir, read_model_info, write_model_info
from distill.data import LabelMap, write_skipped_rows
from distill.modeling import (
    apply_strategy,
    count_parameters,
    load_classifier,
    merged_copy,
    resolve_model_name,
)
from distill.scoring import SavedTeacher
from distill.stage import finish_stage
from distill.tokens import Encoded, LongText
from distill.trainer import loop_figures, save_model_dir, setup_distributed, train

LOOP_KEYS = ("train_seconds", "samples_seen", "best_step", "total_steps", "stopped_early", "world_size", "history")


@dataclass
class Opened:
    """A teacher run after its opening: what every later step reads."""

    cfg: Any  # the resolved TeacherConfig (teachers/finetune.py)
    out: Path  # teacher/, locked by the caller
    device: torch.device  # where the model trains and scores
    rank: int  # this process in a torchrun group (0 alone): rank 0 prints the data lines and writes the JSON files
    trained: bool  # out holds a finished teacher with these settings: nothing is trained, missing caches are scored
    spec: Any  # DataSpec | NerSpec: where the rows come from (distill.json records it)
    data: Any  # Dataset | NerDataset
    labels: LabelMap  # the label names and ids (NER: the IOB2 tags)
    tokenizer: Any  # the base model's
    sources: dict[str, dict]  # transfer set name -> its source dict
    transfer: dict[str, tuple[Any, dict]]  # transfer set name -> (its rows, counts of what was read and dropped)
    notes: list[str]  # one per optional transfer source skipped

    def sets(self) -> dict[str, Any]:
        """What the teacher scores into its caches: the whole training split, then each transfer set."""
        return {"train": self.data.train, **{name: rows for name, (rows, _) in self.transfer.items()}}


@dataclass
class Rows:
    """A task's rows for training, choosing checkpoints and reporting, encoded for its model."""

    train: Any  # the rows trained on: the training split less the holdout (Split | TokenSplit)
    eval: Any  # the rows checkpoints are chosen on: the holdout, or dev
    eval_name: str  # holdout | dev
    train_set: Any  # train encoded for the model (Encoded | distill.ner.WordAligned)
    eval_set: Any  # eval encoded
    dev_set: Any  # dev encoded
    batches: Encoded  # the token rows the loop batches (train_set's)
    opening: str  # the run's first line: model, strategy, parameters, rows, device (every rank prints it)
    lines: list[str]  # what else the rows say (cut rows, data checks, transfer counts); rank 0 prints them
    checks: dict  # classification: distill.inspect.stage_data_checks's figures for metrics.json (NER: none)


class TeacherTask(Protocol):
    """The task-specific parts the skeleton runs (each method one step's part)."""

    def load(self, cfg) -> tuple[Any, Any, LabelMap]:
        """(spec, data, label map): the task's settings checked and its rows read."""

    def transfer_sources(self, cfg, spec, data, tokenizer) -> tuple[dict[str, dict], list[str]]:
        """distill.transfer.resolve_sources for this task: (name -> source dict, notes)."""

    def read_transfer(self, source: dict, data, spec) -> tuple[Any, dict]:
        """The rows one source dict describes, and the counts of what was read and dropped."""

    def model(self, cfg, labels: LabelMap) -> torch.nn.Module:
        """The base model with this task's head, before the strategy is applied."""

    def long_text(self, cfg) -> LongText:
        """How long texts are cut (distill.json's long_text)."""

    def rows(self, run: Opened, params: dict) -> Rows:
        """The rows encoded for the model; ``params``: count_parameters of it (for the opening line)."""

    def loss(self, rows: Rows, device: torch.device) -> Callable:
        """The loop's ``loss_fn(outputs, rows, batch) -> (loss, figures)``."""

    def evaluate(self, run: Opened, rows: Rows) -> Callable:
        """The loop's ``evaluate(model) -> {"score": ...}`` on ``rows.eval_set``."""

    def dev_logits(self, run: Opened, teacher: SavedTeacher, rows: Rows) -> np.ndarray:
        """The best checkpoint's logits on dev: (D, C) per document, NER (N, C) per kept word."""

    def score(self, run: Opened, teacher: SavedTeacher, rows: Rows, dev_logits: np.ndarray) -> dict:
        """Fill the caches (every rank); returns metrics.json's keys about them (cache, ...)."""

    def metrics(self, run: Opened, rows: Rows, dev_logits: np.ndarray) -> dict:
        """metrics.json's task-specific keys: the dev figures, and what the rows were."""

    def done_line(self, result: dict, out: Path) -> str:
        """The run's last line."""


def run_teacher(task: TeacherTask, cfg, out: Path, *, trained: bool) -> dict:
    """The teacher stage for ``task``: fine-tune, save the best model, write the caches; returns
    metrics.json's content ({} on ranks other than 0). ``cfg``: a resolved TeacherConfig; ``out``:
    teacher/, locked by the caller; ``trained``: ``out`` already holds a finished teacher with
    these settings (only the caches are then checked or completed)."""
    run = open_run(task, cfg, out, trained=trained)
    model = apply_strategy(task.model(cfg, run.labels), strategy=cfg.strategy, top_n=cfg.top_n, lora_r=cfg.lora_r,
                           lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout).to(run.device)
    params = count_parameters(model)
    rows = task.rows(run, params)
    print(rows.opening)
    for line in rows.lines if run.rank == 0 else []:
        print(line)
    info = teacher_info(task, run)
    start = time.perf_counter()
    summary = train_or_reuse(task, run, model=model, rows=rows, info=info)
    wall = time.perf_counter() - start
    best = load_classifier(str(out), id2label=run.labels.id2label, task=cfg.task).to(run.device)
    teacher = SavedTeacher(model=best, tokenizer=run.tokenizer, directory=out, info=info, device=run.device)
    dev_logits = task.dev_logits(run, teacher, rows)
    scoring = task.score(run, teacher, rows, dev_logits)  # every rank scores its share of the chunks
    if run.rank != 0:
        return {}
    write_model_info(out, info)  # which scorer made each cache: the student rebuilds its fingerprints from it
    result = {**task.metrics(run, rows, dev_logits), **count_parameters(best),
              "trainable_parameters": params["trainable_parameters"], "strategy": cfg.strategy,
              "base_model": cfg.base_model, **rows_figures(run, rows), **scoring, **loop_figures(summary, wall),
              "loop": summary}
    finish_stage(out, result)  # metrics.json, the model card, the resume checkpoint dropped
    print(task.done_line(result, out))
    return result


def open_run(task: TeacherTask, cfg, out: Path, *, trained: bool) -> Opened:
    """The opening every teacher shares: the data is read before anything is written (bad data
    leaves no half-made run behind), then the run folder is claimed and the transfer sets read."""
    from transformers import AutoTokenizer

    device = setup_distributed(cfg.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.manual_seed(cfg.seed)
    source = resolve_model_name(cfg.base_model)  # a base model that is no folder: one line, before the data
    spec, data, labels = task.load(cfg)
    claim_run_dir(out.parent, stage="teacher")
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        write_skipped_rows(out, data)
    tokenizer = AutoTokenizer.from_pretrained(source)
    sources, notes = task.transfer_sources(cfg, spec, data, tokenizer)
    if trained and (out / layout.MODEL_INFO).exists():  # sets scored earlier stay (python -m distill score adds more)
        earlier = read_model_info(out).transfer
        sources = {**{n: {k: v for k, v in e.items() if k != "counts"} for n, e in earlier.items()}, **sources}
    for note in notes if rank == 0 else []:
        print(note)
    transfer = {name: task.read_transfer(source, data, spec) for name, source in sources.items()}
    return Opened(cfg=cfg, out=out, device=device, rank=rank, trained=trained, spec=spec, data=data, labels=labels,
                  tokenizer=tokenizer, sources=sources, transfer=transfer, notes=notes)


def teacher_info(task: TeacherTask, run: Opened) -> ModelInfo:
    """The teacher's distill.json: what later stages need (labels, max length, data, transfer sets)."""
    cfg = run.cfg
    architecture = {"base_model": cfg.base_model, "strategy": cfg.strategy,
                    **({"top_n": cfg.top_n} if cfg.strategy == "top-n" else {}),
                    **({"lora_r": cfg.lora_r} if cfg.strategy == "lora" else {}),
                    **({"pooling": "mean (fixed last block)"} if cfg.pooling == "mean" else {})}
    return ModelInfo(role="teacher", task=cfg.task, labels=run.labels.names, max_length=cfg.max_length, data=run.spec,
                     architecture=architecture, long_text=task.long_text(cfg),
                     transfer={name: {**source, "counts": run.transfer[name][1]} for name, source in run.sources.items()})


def train_or_reuse(task: TeacherTask, run: Opened, *, model, rows: Rows, info: ModelInfo) -> dict:
    """Train ``model`` (the best checkpoint saved in ``run.out`` with ``info``) and return the
    loop's summary, or, for a finished teacher, the summary it recorded."""
    cfg, out = run.cfg, run.out
    if run.trained:
        print(f"teacher: {out} is already trained with these settings; scoring only what is missing")
        summary = json.loads((out / layout.METRICS_FILE).read_text())["loop"]
        if run.rank == 0:
            write_model_info(out, info)  # transfer sets added since are what later stages read
        return summary

    def save_best(trained, directory):
        save_model_dir(merged_copy(trained), run.tokenizer, directory, config=cfg, info=info)

    summary = train(model, cfg=cfg, train_set=rows.batches, evaluate=task.evaluate(run, rows), eval_name=rows.eval_name,
                    loss_fn=task.loss(rows, run.device), out_dir=out, save_best=save_best)
    return {k: summary[k] for k in LOOP_KEYS}


def rows_figures(run: Opened, rows: Rows) -> dict:
    """metrics.json's figures about the rows every teacher reports."""
    return {"train_rows": len(rows.train), "checkpoint_chosen_on": rows.eval_name, "eval_rows": len(rows.eval),
            "device": str(run.device), "transfer": {name: counts for name, (_, counts) in run.transfer.items()},
            "transfer_notes": run.notes, "skipped_rows": len(run.data.skipped),
            "fallback_decoded": run.data.fallback_decoded}
