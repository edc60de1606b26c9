"""The student stage: train a smaller model on the teacher's cached logits and the hard labels.

    python -m distill distill --run-dir runs/demo --preset quick [--key=value ...]

Reads ``<run-dir>/teacher/`` (its ``distill.json`` says which task, data, labels, max length and
transfer sets; ``logits/`` holds the scores) and writes ``<run-dir>/student/`` (the KD student)
and, unless ``--student_ce=false``, ``<run-dir>/student_ce/``: the same student trained on the
labelled rows with cross-entropy only, the control that says what distillation added. Ends by
writing ``<run-dir>/report.md``.

``train_student`` is the one skeleton of a student run for both tasks (its steps:
students/stage.py); the teacher's task picks the parts plugged in (``student_task``): a
classifier's (``CLASSIFICATION``, here) or a tagger's (``students.ner.NER``); a causal LM's
teacher hands the stage to students/lm.py.

A classifier's training rows are the teacher's labelled rows plus its transfer sets (KD-only
rows: no hard label, or the teacher's argmax with ``--pseudo_labels=true``). Each cache's
fingerprint and per-row text hashes are checked before the first step.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill import layout
from distill.artifacts import ModelInfo, claim_run_dir, read_model_info
from distill.cache import TeacherLogits, cache_parts, open_logit_cache
from distill.config import ConfigError, apply_overrides, override_key
from distill.data import Dataset, Split, load_dataset
from distill.inspect import stage_data_checks
from distill.kd_defaults import IGNORE_INDEX, check_temperature
from distill.layer_losses import (
    Projections,
    attention_loss,
    disable_attention_dropout,
    hidden_loss,
    layer_pairs,
)
from distill.lock import stage_lock
from distill.losses import kd_loss
from distill.metrics import classification_metrics
from distill.modeling import count_parameters, load_classifier
from distill.predict import softmax
from distill.scoring import cls_cache_name, split_files
from distill.stage import finish_stage
from distill.tokens import Encoded, encode
from distill.trainer import (
    classification_evaluate,
    loop_figures,
    planned_evals,
    predict_logits,
    save_model_dir,
    train,
)
from distill.transfer import read_transfer
from distill.trim_vocab import trim_to_rows
from students.build import build_student, freeze_word_embeddings
from students.config import CE_SCHEDULES, PRESETS, StudentConfig
from students.ner import NER
from students.stage import (
    RunPlan,
    StageInputs,
    Student,
    StudentTask,
    check_labels,
    close_stage,
    control_settings,
    matched_schedule,
    open_stage,
    plan_line,
    rank0_first,
    stage_figures,
    transfer_names,
)


class WithLayerOutputs(nn.Module):
    """The student plus the projections of the layer loss; its forward asks the student for the
    hidden states and attention maps that loss needs. Only ``student`` is saved."""

    def __init__(self, student: nn.Module, projections: Projections, *, attentions: bool):
        super().__init__()
        self.student, self.projections, self.attentions = student, projections, attentions

    def forward(self, **batch):
        return self.student(**batch, output_hidden_states=True, output_attentions=self.attentions)


def student_of(trained: nn.Module) -> nn.Module:
    """The student inside what the loop trained (``WithLayerOutputs``' projections are not saved)."""
    return trained.student if isinstance(trained, WithLayerOutputs) else trained


def open_caches(teacher_dir: Path, info: ModelInfo, data: Dataset, names: list[str], *, cls: bool = False,
                logits: bool = True) -> tuple[TeacherLogits | None, dict[str, Split], TeacherLogits | None]:
    """The teacher's logits for the training split and the named transfer sets, each checked
    against its fingerprint and text hashes, the rows of each transfer set, and (``cls``) the
    cached per-layer [CLS] states of the same rows. ``logits=False`` (the teacher runs online):
    only the rows; a cache that is unfinished or absent is then no obstacle. ``names``: sets the
    teacher scored (``students.stage.transfer_names`` checked them)."""
    splits = {"train": data.train}
    for name in names:
        splits[name] = read_transfer(info.transfer[name], dataset=data, spec=info.data)[0]
    caches, states = [], []
    for name, split in splits.items():
        files = split_files(name, data, info.transfer.get(name))
        if logits:  # made by the scorer distill.json names (absent: pytorch); states always by pytorch
            cache = open_logit_cache(layout.logits_dir(teacher_dir), name, expected_parts=cache_parts(
                teacher_dir, info, name=name, split=split, data_files=files))
            cache.check_rows(split)
            caches.append(cache.logits)
        if cls:
            if not (layout.logits_dir(teacher_dir) / f"{cls_cache_name(name)}.manifest.json").exists():
                raise ConfigError(f"--layer_source=cached: the teacher cached no [CLS] states for {name!r}; "
                                  "rescore with `python -m distill score --run-dir <run> --cache_cls=true`")
            cached = open_logit_cache(layout.logits_dir(teacher_dir), cls_cache_name(name), expected_parts=cache_parts(
                teacher_dir, info, name=name, split=split, data_files=files, what="cls"))
            cached.check_rows(split)
            states.append(cached.logits)
    transfer = {n: s for n, s in splits.items() if n != "train"}
    return TeacherLogits(caches) if logits else None, transfer, TeacherLogits(states) if cls else None


# ------------------------------------------------------------------ classification's parts


@dataclass(frozen=True)
class TeacherUse:
    """How a classification student reads its teacher (``teacher_use``: from the checked settings)."""

    cached_layers: bool  # the hidden-state loss reads the teacher's cached [CLS] states (layer_source=cached)
    layers_on: bool  # a layer loss is on (w_hidden or w_attn > 0)
    online: bool  # the teacher runs every step: --online=true, or a layer loss it must run for


def teacher_use(cfg: StudentConfig) -> TeacherUse:
    """Where the teacher's scores come from, with ``ConfigError`` for layer-loss settings that cannot be."""
    if cfg.layer_source not in ("online", "cached"):
        raise ConfigError(f"--layer_source={cfg.layer_source!r}: expected online or cached")
    cached_layers = cfg.layer_source == "cached" and cfg.w_hidden > 0
    if cached_layers and cfg.w_attn > 0:
        raise ConfigError("--w_attn needs the teacher online (attention maps are not cached); use --layer_source=online")
    layers_on = cfg.w_hidden > 0 or cfg.w_attn > 0
    return TeacherUse(cached_layers=cached_layers, layers_on=layers_on,
                      online=cfg.online or (layers_on and not cached_layers))


def soft_target_line(logits: np.ndarray, temperature: float, *, pseudo_labels: bool = False) -> str:
    """How sure the teacher's soft targets are at ``temperature``: their median top probability, with a
    pointer to pseudo-labels (unless ``pseudo_labels``: already on) when that is nearer uniform than
    one-hot. logits: (R, C) the training rows'.
    (A teacher fitted on 500 rows had a median margin of 0.35 logits, top probability 0.54 at T 2: its
    soft targets lost to the CE control at every T tried, its argmax won by 5.7 points: docs/RESULTS.md.)"""
    top = softmax(logits.astype(np.float64) / temperature).max(axis=1)  # (R,) the largest probability
    classes = logits.shape[1]
    median, halfway = float(np.median(top)), 1 / classes + (1 - 1 / classes) / 2
    line = (f"teacher soft targets at T {temperature:g}: median top probability {median:.3f} over {len(top):,} rows "
            f"(uniform {1 / classes:.3f})")
    if median < halfway:
        line += "; nearer uniform than one-hot, so the KD term moves the student little" + (
            " (the transfer rows also carry its argmax: --pseudo_labels=true)" if pseudo_labels else
            ": a teacher this unsure may teach better through --pseudo_labels=true")
    return line


@dataclass
class ClassRows:
    """A classification student's training rows and where the teacher's scores of each are."""

    split: Split  # (R,) the labelled rows kept, then the transfer rows (sampled down to transfer_rows)
    labels: np.ndarray  # (R,) int64 each row's hard label; IGNORE_INDEX on KD-only rows
    teacher_rows: np.ndarray  # (R,) int64 each row's row in the caches (train, then each transfer set in turn)
    labelled: int  # the first `labelled` rows carry labels
    transfer_sets: list[str]  # the transfer sets read, in order
    logits: TeacherLogits | None  # the teacher's cached logits, (N_teacher, C) (None: it runs online)
    cls: TeacherLogits | None  # its cached per-layer [CLS] states, (N_teacher, (L_t + 1) * H_t) (layer_source=cached)
    use: TeacherUse  # how the teacher is read

    @property
    def transfer_rows(self) -> int:
        return len(self.split) - self.labelled


def training_split(cfg: StudentConfig, inputs: StageInputs, labelled: Split,
                   transfer: dict[str, Split]) -> tuple[Split, np.ndarray]:
    """The labelled rows, then the transfer rows, capped at ``transfer_rows`` in all (a sample seeded
    by the data seed, order kept); and each row's row in the teacher's caches, (R,)."""
    kept = inputs.kept
    parts, global_rows, offset = [labelled], [kept], len(inputs.data.train)
    for split in transfer.values():
        global_rows.append(offset + np.arange(len(split)))
        parts.append(split)
        offset += len(split)
    teacher_rows, rows = np.concatenate(global_rows), Split.concat(parts, source="training rows")
    if cfg.transfer_rows is None or len(teacher_rows) - len(kept) <= cfg.transfer_rows:
        return rows, teacher_rows
    rng = np.random.default_rng([inputs.teacher.data.seed, 2])
    pick = np.sort(rng.choice(np.arange(len(kept), len(teacher_rows)), cfg.transfer_rows, replace=False))
    chosen = np.concatenate([np.arange(len(kept)), pick])
    return rows.subset(chosen), teacher_rows[chosen]


def trim_vocab(cfg: StudentConfig, inputs: StageInputs, model: nn.Module, tokenizer, rows: Split):
    """Keep the embedding rows the training rows use (dev stays unseen, only measured); returns the
    trimmed model and tokenizer and trim_to_rows's counts (metrics.json)."""
    model, tokenizer, trimmed = trim_to_rows(model, tokenizer, rows, inputs.data.dev,
                                             inputs.store / f"vocab_rank{inputs.rank}")
    if cfg.freeze_embeddings:  # the trimmed table is a new module: frozen again
        freeze_word_embeddings(model)
    if inputs.rank == 0:
        print(f"{inputs.out.name}: trim_vocab keeps {trimmed['vocab_after']:,} of {trimmed['embedding_rows_before']:,} "
              f"embedding rows, {trimmed['parameters_before']:,} -> {trimmed['parameters_after']:,} parameters; "
              f"dev: {trimmed['dev_unk_token_share']:.2%} of tokens become [UNK], "
              f"{trimmed['dev_resegmented_row_share']:.1%} of rows tokenise differently")
    return model, tokenizer, trimmed


@dataclass
class ClassSets:
    """A classification student's rows in its own tokens."""

    train: Encoded  # (R_model,) the training rows (long_text=chunks: several model rows per text)
    eval: Encoded  # the rows checkpoints are chosen on
    dev: Encoded  # dev, measured once at the end
    teacher_rows: np.ndarray  # (R_model,) int64 each model row's row in the caches (a chunk reads its text's)
    data_checks: dict  # stage_data_checks' figures (metrics.json's "data_checks")


@dataclass
class OnlineTeacher:
    """The teacher run every step: for layer losses, or as the baseline of cached logits."""

    model: nn.Module  # the teacher classifier, in eval mode on the student's device
    rows: Encoded | None  # the training rows in the teacher's tokens (None: the student's batches are the teacher's)


@dataclass
class LayerMap:
    """Which student layer learns from which teacher layer (the hidden-state and attention losses)."""

    pairs: list[tuple[int, int]]  # (student hidden-state index, teacher hidden-state index), embeddings first
    projections: Projections  # student width -> teacher width, one per pair (trained, not saved)
    teacher_width: int  # H_t, the teacher's hidden size


def layer_map(teacher_dir: Path, student: Student) -> LayerMap:
    """The layer pairs of a student and its teacher (a layer subset: the teacher layers it kept)."""
    from transformers import AutoConfig

    config, teacher_config = student.model.config, AutoConfig.from_pretrained(teacher_dir)
    pairs = layer_pairs(config.num_hidden_layers, teacher_config.num_hidden_layers,
                        student.description.get("layers_kept"))
    return LayerMap(pairs=pairs, projections=Projections(len(pairs), config.hidden_size, teacher_config.hidden_size),
                    teacher_width=teacher_config.hidden_size)


@dataclass
class ClassificationLoss:
    """The loss of a batch: w_kd * T² * KL + w_ce * CE (``kd_loss``, the fused kernel on CUDA), plus
    w_hidden * the hidden-state loss and w_attn * the attention loss between mapped layers."""

    cfg: StudentConfig  # the weights and the temperature
    use: TeacherUse  # where the teacher's scores come from
    labels: np.ndarray  # (R_model,) int64 each model row's hard label (IGNORE_INDEX: KD-only)
    teacher_rows: np.ndarray  # (R_model,) int64 each model row's row in the caches
    logits: TeacherLogits | None  # the cached logits, (N_teacher, C) (read when the teacher is not online)
    cls: TeacherLogits | None  # the cached [CLS] states, (N_teacher, (L_t + 1) * H_t) (layer_source=cached)
    teacher: OnlineTeacher | None  # the teacher run every step (None: cached logits)
    layers: LayerMap | None  # the layer losses' pairs and projections (None: no layer loss)
    device: torch.device  # where the batch is

    def __call__(self, outputs, rows: np.ndarray, batch: dict) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        t_out = self.teacher_outputs(rows, batch)
        if t_out is not None:
            t_logits = t_out.logits.float()  # (B, C)
        else:
            t_logits = torch.from_numpy(self.logits[self.teacher_rows[rows]]).to(self.device)  # (B, C)
        labels = torch.as_tensor(self.labels[rows], device=self.device)  # (B,)
        kd = kd_loss(outputs.logits.float(), t_logits, labels, temperature=cfg.temperature, w_kd=cfg.w_kd,
                     w_ce=cfg.w_ce, ignore_index=IGNORE_INDEX)
        hidden, attention, layer_terms = self.layer_losses(outputs, t_out, rows, batch)
        # kd.loss = w_kd * T² * KL + w_ce * CE (the fused kernel on CUDA)
        loss = kd.loss + cfg.w_hidden * hidden + cfg.w_attn * attention
        return loss, {"ce": kd.ce.item(), "kd": kd.kd.item(), **layer_terms}

    def teacher_outputs(self, rows: np.ndarray, batch: dict):
        """The online teacher's outputs on the batch's rows (None: the teacher is not online)."""
        if self.teacher is None:
            return None
        t_batch = batch if self.teacher.rows is None else self.teacher.rows.batch(rows, self.device)
        with torch.no_grad():
            return self.teacher.model(**t_batch, output_hidden_states=self.use.layers_on,
                                      output_attentions=self.cfg.w_attn > 0)

    def layer_losses(self, outputs, t_out, rows: np.ndarray, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The hidden-state and attention losses (zero when off) and their logged terms."""
        cfg, layers, terms = self.cfg, self.layers, {}
        hidden = attention = torch.zeros((), device=self.device)
        if cfg.w_hidden > 0 and self.use.cached_layers:  # (B, (L_t + 1) * H_t) -> one (B, 1, H_t) per teacher layer
            cls = torch.from_numpy(self.cls[self.teacher_rows[rows]]).to(self.device).view(len(rows), -1,
                                                                                         layers.teacher_width)
            hidden = hidden_loss(outputs.hidden_states, tuple(cls[:, i:i + 1] for i in range(cls.shape[1])),
                                 layers.pairs, batch["attention_mask"], layers.projections, tokens_aligned=False)
            terms["hidden"] = hidden.item()
        elif cfg.w_hidden > 0:
            hidden = hidden_loss(outputs.hidden_states, t_out.hidden_states, layers.pairs, batch["attention_mask"],
                                 layers.projections, tokens_aligned=self.teacher.rows is None)
            terms["hidden"] = hidden.item()
        if cfg.w_attn > 0:
            attention = attention_loss(outputs.attentions, t_out.attentions, layers.pairs, batch["attention_mask"])
            terms["attn"] = attention.item()
        return hidden, attention, terms


class Classification:
    """A classifier's student: the parts ``train_student`` plugs in for a teacher of task classification."""

    presets = PRESETS
    unit = "rows"
    speed_unit = "samples"

    def settings(self, cfg: StudentConfig, *, role: str) -> StudentConfig:
        if role == "student_ce":
            cfg = control_settings(cfg, w_hidden=0.0, w_attn=0.0, online=False)
        teacher_use(cfg)  # the layer-loss settings checked before any data is read
        return cfg

    def load_data(self, teacher: ModelInfo, *, teacher_dir: Path) -> Dataset:
        data = load_dataset(teacher.data)
        check_labels(teacher_dir, teacher.labels, data.label_map.names, what="labels")
        return data

    def rows(self, cfg: StudentConfig, inputs: StageInputs) -> ClassRows:
        """The labelled training rows kept (the held-back checkpoint rows are not), then the transfer rows."""
        use, data = teacher_use(cfg), inputs.data
        logits, transfer, cls = open_caches(inputs.teacher_dir, inputs.teacher, data, transfer_names(cfg, inputs),
                                            cls=use.cached_layers, logits=cfg.pseudo_labels or not use.online)
        labelled = data.train.subset(inputs.kept)
        split, teacher_rows = training_split(cfg, inputs, labelled, transfer)
        if cfg.pseudo_labels:  # self-training: the teacher's argmax as the transfer rows' label
            extra = logits[teacher_rows[len(labelled):]].argmax(axis=1).astype(np.int64)
        else:
            extra = np.full(len(split) - len(labelled), IGNORE_INDEX, dtype=np.int64)
        if logits is not None and cfg.w_kd > 0 and inputs.rank == 0:
            print(soft_target_line(logits[teacher_rows], cfg.temperature, pseudo_labels=cfg.pseudo_labels))
        return ClassRows(split=split, labels=np.concatenate([data.label_map.encode(labelled), extra]),
                         teacher_rows=teacher_rows, labelled=len(labelled), transfer_sets=list(transfer),
                         logits=logits, cls=cls, use=use)

    def model(self, cfg: StudentConfig, inputs: StageInputs, rows: ClassRows) -> Student:
        from transformers import AutoTokenizer

        attn = "eager" if cfg.w_attn > 0 else None  # SDPA returns no attention maps
        model, tokenizer_source, description = build_student(cfg, teacher_dir=inputs.teacher_dir,
                                                             id2label=inputs.teacher.id2label, attn=attn)
        tokenizer, trimmed = AutoTokenizer.from_pretrained(tokenizer_source), {}
        if cfg.trim_vocab:
            model, tokenizer, trimmed = trim_vocab(cfg, inputs, model, tokenizer, rows.split)
        return Student(model=model, tokenizer=tokenizer, description=description,
                       long_text=cfg.long_text_settings(), figures=trimmed)

    def encode_rows(self, cfg: StudentConfig, inputs: StageInputs, rows: ClassRows, student: Student) -> ClassSets:
        """The rows in the student's tokens (the training rows through a token store); prints the data checks."""
        long_text, tokenizer, data = student.long_text, student.tokenizer, inputs.data
        train_set = rank0_first(inputs.rank, lambda: encode(tokenizer, rows.split, rows.labels, cfg.max_length,
                                                            long_text=long_text, store=inputs.store / "student"))
        eval_set, dev_set = (encode(tokenizer, split, data.label_map.encode(split), cfg.max_length, long_text=long_text)
                             for split in (inputs.eval_rows, data.dev))
        checks, lines = stage_data_checks(
            train=rows.split, dev=data.dev, train_lengths=train_set.source_lengths, dev_lengths=dev_set.source_lengths,
            max_length=cfg.max_length, cut=long_text.effect(tokenizer, cfg.max_length, train_set, dev_set),
            deduped=data.deduped)
        for line in lines if inputs.rank == 0 else []:
            print(line)
        # (R_model,) from here on: a chunk row reads its document's teacher row
        teacher_rows = rows.teacher_rows if train_set.groups is None else rows.teacher_rows[train_set.groups]
        return ClassSets(train=train_set, eval=eval_set, dev=dev_set, teacher_rows=teacher_rows, data_checks=checks)

    def online_teacher(self, cfg: StudentConfig, inputs: StageInputs, rows: ClassRows,
                       student: Student) -> OnlineTeacher | None:
        """The teacher run every step (layer losses, --online=true), reading the student's batches when
        they are its own (same tokens, max_length and long_text), else its own encoding of the rows."""
        if not rows.use.online:
            return None
        from transformers import AutoTokenizer

        teacher, tokenizer = inputs.teacher, student.tokenizer
        teacher_tok = AutoTokenizer.from_pretrained(inputs.teacher_dir)
        same_tokens = (type(tokenizer) is type(teacher_tok) and tokenizer.get_vocab() == teacher_tok.get_vocab()
                       and cfg.max_length == teacher.max_length)
        if cfg.w_attn > 0 and not same_tokens:
            raise ConfigError("--w_attn: attention maps can only be compared when the student reads the teacher's "
                              "tokens (its tokenizer and max_length); use --w_hidden ([CLS] states) instead")
        long_text, teacher_long_text = cfg.long_text_settings(), teacher.long_text
        same_batches = same_tokens and long_text == teacher_long_text
        if not same_batches and long_text != teacher_long_text and (
                cfg.w_attn > 0 or "chunks" in (long_text.mode, teacher_long_text.mode)):
            raise ConfigError(f"--long_text={long_text.mode}: the online teacher must read the student's rows "
                              f"({'attention maps' if cfg.w_attn > 0 else 'chunks'}); give the student the teacher's "
                              f"long_text settings {teacher.long_text.to_dict()}")
        model = load_classifier(str(inputs.teacher_dir), id2label=teacher.id2label,
                                attn_implementation="eager" if cfg.w_attn > 0 else None)
        own_rows = None if same_batches else rank0_first(inputs.rank, lambda: encode(  # its own token store
            teacher_tok, rows.split, rows.labels, teacher.max_length, long_text=teacher_long_text,
            store=inputs.store / "teacher"))
        return OnlineTeacher(model=model.to(inputs.device).eval(), rows=own_rows)

    def loss(self, cfg: StudentConfig, inputs: StageInputs, rows: ClassRows, student: Student, sets: ClassSets,
             teacher: OnlineTeacher | None) -> tuple[nn.Module, ClassificationLoss]:
        """The student (with the layer losses: wrapped with their projections) and its loss."""
        if cfg.w_attn > 0 and disable_attention_dropout(student.model) == 0:
            raise ConfigError(f"--w_attn: found no attention dropout to turn off in {type(student.model).__name__}; "
                              "its attention maps would be compared after dropout")
        model = student.model.to(inputs.device)
        layers = layer_map(inputs.teacher_dir, student) if rows.use.layers_on else None
        if layers is not None:
            model = WithLayerOutputs(student.model, layers.projections, attentions=cfg.w_attn > 0).to(inputs.device)
        return model, ClassificationLoss(cfg=cfg, use=rows.use, labels=sets.train.labels,
                                         teacher_rows=sets.teacher_rows, logits=rows.logits, cls=rows.cls,
                                         teacher=teacher, layers=layers, device=inputs.device)

    def evaluate(self, cfg: StudentConfig, inputs: StageInputs, sets: ClassSets):
        """Accuracy on the checkpoint rows; with --eval_dev on a holdout, dev accuracy logged beside it
        (an accuracy-against-passes curve, never used to choose)."""
        def on(encoded: Encoded):
            return classification_evaluate(encoded, inputs.teacher.labels, batch_size=cfg.eval_batch_size,
                                           device=inputs.device, amp=cfg.amp and inputs.device.type == "cuda")

        on_eval = on(sets.eval)
        if not (cfg.eval_dev and inputs.eval_name == "holdout"):
            return on_eval
        on_dev = on(sets.dev)
        return lambda m: {**on_eval(m), "dev_accuracy": on_dev(m)["accuracy"]}

    def plan(self, cfg: StudentConfig, inputs: StageInputs, rows: ClassRows, sets: ClassSets) -> str:
        return (f" | w_kd {cfg.w_kd} w_ce {cfg.w_ce} w_hidden {cfg.w_hidden} w_attn {cfg.w_attn} T {cfg.temperature} | "
                f"checkpoints chosen on {len(inputs.eval_rows)} {inputs.eval_name} rows | "
                f"{'online teacher' if rows.use.online else 'cached logits'}")

    def report(self, cfg: StudentConfig, inputs: StageInputs, rows: ClassRows, student: Student, sets: ClassSets,
               best: nn.Module) -> dict:
        logits = predict_logits(best, sets.dev, batch_size=cfg.eval_batch_size, device=inputs.device)  # (N_dev, C)
        return {**classification_metrics(logits, sets.dev.document_labels, inputs.teacher.labels),
                "w_hidden": cfg.w_hidden, "w_attn": cfg.w_attn,
                "layer_source": cfg.layer_source if rows.use.layers_on else None, "online": rows.use.online,
                "long_text": student.long_text.to_dict(), "train_model_rows": len(sets.train), "data_checks": sets.data_checks,
                **student.figures}

    def scores(self, result: dict) -> str:
        return f"dev accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}"


CLASSIFICATION = Classification()


# ------------------------------------------------------------------------- the skeleton


def train_student(cfg: StudentConfig, *, task: StudentTask, teacher_dir: Path, out: Path, role: str,
                  match: RunPlan | None = None) -> dict:
    """One student run, either task (the parts ``task`` plugs in: students/stage.py): the KD student
    (``role="student"``) or the CE-only control (``role="student_ce"``: labelled rows, CE only;
    ``match``: the KD student's plan, under ``--ce_schedule=matched``).
    Returns its metrics (on ranks other than 0 only its ``total_steps`` and ``planned_evals``)."""
    cfg = task.settings(cfg, role=role)
    inputs = open_stage(cfg, task, teacher_dir=teacher_dir, out=out)
    rows = task.rows(cfg, inputs)
    torch.manual_seed(cfg.seed)
    student = task.model(cfg, inputs, rows)
    sets = task.encode_rows(cfg, inputs, rows, student)
    if match is not None:  # the control's passes over its own rows, known once they are encoded
        schedule = matched_schedule(steps=match.total_steps, evals=match.planned_evals, floor=cfg.ce_epochs,
                                    steps_per_epoch=len(sets.train) // cfg.batch_size, name="the KD student")
        cfg = dataclasses.replace(cfg, epochs=schedule.epochs, evals=schedule.evals)
        print(f"{out.name}: --ce_schedule=matched: {schedule.why}")
    teacher = task.online_teacher(cfg, inputs, rows, student)
    model, loss_fn = task.loss(cfg, inputs, rows, student, sets, teacher)

    run_cfg = dataclasses.replace(cfg, teacher_dir=str(teacher_dir))
    info = ModelInfo(role=role, task=inputs.teacher.task, labels=inputs.teacher.labels, max_length=cfg.max_length,
                     data=inputs.teacher.data, architecture={**student.description, "teacher": str(teacher_dir)},
                     long_text=student.long_text)

    def save_best(trained, directory):
        save_model_dir(student_of(trained), student.tokenizer, directory, config=run_cfg, info=info)

    print(plan_line(cfg, task, inputs, rows, student=student, sets=sets))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = train(model, cfg=run_cfg, train_set=sets.train, evaluate=task.evaluate(cfg, inputs, sets),
                    eval_name=inputs.eval_name, loss_fn=loss_fn, out_dir=out, save_best=save_best)
    wall = time.perf_counter() - start
    plan = {"total_steps": summary["total_steps"], "planned_evals": planned_evals(dataclasses.asdict(cfg))}
    if inputs.rank != 0:
        return plan

    # the report: the best checkpoint on dev, the task's figures, then what both tasks write alike
    best = load_classifier(str(out), id2label=inputs.teacher.id2label, task=inputs.teacher.task).to(inputs.device)
    result = {**plan, **task.report(cfg, inputs, rows, student, sets, best), **count_parameters(best),
              **stage_figures(cfg, inputs, rows, student=student, summary=summary, role=role),
              **loop_figures(summary, wall)}
    finish_stage(out, result)  # metrics.json, the model card, the resume checkpoint dropped
    shutil.rmtree(inputs.store, ignore_errors=True)  # the token stores (classification's), rebuilt by a rerun
    print(f"{out.name} done: {task.scores(result)}, {result['train_samples_per_s']:.1f} train {task.speed_unit}/s, "
          f"{summary['step']} steps -> {out}")
    return result


# ------------------------------------------------------------------------------ the CLI


def student_task(task: str | None) -> StudentTask:
    """The one dispatch on the teacher's task (``teacher_task``): a tagger's parts and presets
    (students/ner.py), else a classifier's (also with no teacher yet: ``main`` then reports it)."""
    return NER if task == "ner" else CLASSIFICATION


def stage_config(argv: list[str], task: StudentTask) -> tuple[StudentConfig, Path]:
    """The stage's config: ``task``'s preset, then the overrides."""
    parser = argparse.ArgumentParser(prog="python -m distill distill", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/demo", help="the run directory holding teacher/")
    parser.add_argument("--preset", default="quick", choices=sorted(task.presets))
    args, overrides = parser.parse_known_args(argv)
    data_flags = [o for o in overrides if o.split("=", 1)[0] in ("--data", "--max_train_rows", "--text_column")]
    if data_flags:
        raise ConfigError(f"{data_flags[0]}: the student trains on the rows the teacher cached (its data is in "
                          "teacher/distill.json); retrain the teacher to change the data")
    cfg = apply_overrides(task.presets[args.preset], overrides)
    check_temperature(cfg.temperature)  # T <= 0: one line now, not at the first training step
    if cfg.ce_schedule not in CE_SCHEDULES:
        raise ConfigError(f"--ce_schedule={cfg.ce_schedule}: choose one of {', '.join(CE_SCHEDULES)}")
    return cfg, Path(args.run_dir)


def parse_args(argv: list[str]) -> tuple[StudentConfig, Path]:
    """The config ``main`` runs with: the preset of the teacher's task (a tagger's: NER_PRESETS), then the overrides."""
    return stage_config(argv, student_task(teacher_task(argv)))


def teacher_of(cfg: StudentConfig, run_dir: Path) -> Path:
    return Path(cfg.teacher_dir) if cfg.teacher_dir else layout.teacher_dir(run_dir)


def teacher_task(argv: list[str]) -> str | None:
    """The task in the teacher's distill.json (None when there is none yet: the usual error follows),
    the teacher found as ``teacher_of`` finds it (``--teacher_dir=``, else under ``--run-dir``)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--run-dir", default="runs/demo")
    args, rest = parser.parse_known_args(argv)
    given = [o.split("=", 1)[1] for o in rest if "=" in o and override_key(o) == "teacher_dir"]
    teacher_dir = Path(given[-1]) if given else layout.teacher_dir(args.run_dir)
    return read_model_info(teacher_dir).task if (teacher_dir / layout.MODEL_INFO).is_file() else None


def main(argv: list[str]) -> int:
    task = teacher_task(argv)  # the one read of the teacher's task: the stage, its presets and its parts
    if task == "lm":  # a causal LM: its own config and loss (students/lm.py)
        from students.lm import main as lm_main

        return lm_main(argv)
    parts = student_task(task)
    cfg, run_dir = stage_config(argv, parts)
    teacher_dir = teacher_of(cfg, run_dir)
    if task is None:  # no teacher there: read_model_info says so in one line, before the run dir is claimed
        read_model_info(teacher_dir, hint="make teacher")
    claim_run_dir(run_dir, stage="distill")  # new when --teacher_dir names a teacher elsewhere
    roles = ["student", "student_ce"] if cfg.student_ce else ["student"]
    with contextlib.ExitStack() as locks:  # both folders up front: a second run stops now, not after the first model
        for role in roles:
            locks.enter_context(stage_lock(run_dir / role))
        plan = None
        for role in roles:
            match = plan if role == "student_ce" and cfg.ce_schedule == "matched" else None
            result = train_student(cfg, task=parts, teacher_dir=teacher_dir, out=run_dir / role, role=role, match=match)
            plan = RunPlan(total_steps=result["total_steps"], planned_evals=result["planned_evals"])
    return close_stage(run_dir)
