"""The student stage for token classification: a teacher whose ``distill.json`` says task ``ner``.

    python -m distill distill --run-dir RUN [--preset quick] [--key=value ...]   (the task comes from the teacher)

``NER`` holds a tagger's parts of the student stage's one skeleton (students/distill.py's
``train_student``; the steps: students/stage.py), plugged in when the teacher is a token
classifier. The same builders (``students/build.py``: layer subset, another pretrained model with its
own tokenizer, fresh), the same loop, and the same loss at token level: one row per word
(distill/losses.py's convention), the student's logits at its own first sub-token of each word
against the teacher's cached logits of that word (``teacher/logits/train.npy``, one row per word,
memory-mapped: only the rows of a batch are read). Padding words are masked with ``row_mask``, and
so are words the teacher's max length cut (it has no logits for them; counted in metrics.json);
non-first sub-tokens are never gathered. The student's tokenizer need not be the teacher's: both
align to the same words. ``kd_loss`` runs the fused Triton kernel on CUDA, the reference elsewhere.

Transfer sets (the teacher's label-free sentences, scored per word: distill/ner_transfer.py) join
the labelled sentences as KD-only rows: their words carry no tag, so only the KD term reads them
(``--pseudo_labels=true`` gives them the teacher's argmax tag instead, for a CE-only self-training
arm). Every cache is checked against its fingerprint, sentence hashes and offsets before the first
step; the caches are read as one: a joint sentence numbering over train, then each set in turn.

``role="student_ce"`` is the control: the same student on the labelled sentences, cross-entropy
only. Classification-only settings (layer losses, online teacher, vocabulary trimming, long_text)
are an error here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill.artifacts import ModelInfo
from distill.cache import TeacherLogits, joint_offsets
from distill.config import ConfigError
from distill.kd_defaults import IGNORE_INDEX
from distill.losses import kd_loss
from distill.ner import (
    WordAligned,
    align_words,
    ner_evaluate,
    ner_metrics,
    open_word_cache,
    predict_word_logits,
    teacher_rows,
    word_batch,
)
from distill.ner_data import NerDataset, TokenSplit, load_ner_dataset
from distill.ner_transfer import read_ner_transfer
from distill.scoring import split_files
from distill.tokens import LongText
from students.build import build_student
from students.config import NER_PRESETS, StudentConfig
from students.stage import StageInputs, Student, check_labels, control_settings, transfer_names


def check_ner_settings(cfg: StudentConfig) -> None:
    """Raise ``ConfigError`` for StudentConfig settings that only classification has."""
    given = {"w_hidden": cfg.w_hidden > 0, "w_attn": cfg.w_attn > 0, "online": cfg.online,
             "trim_vocab": cfg.trim_vocab, "long_text": cfg.long_text != "truncate"}
    wrong = [name for name, value in given.items() if value]
    if wrong:
        raise ConfigError(f"task ner (from the teacher's distill.json): {', '.join('--' + w for w in wrong)} apply to "
                          "classification only (ner distils the cached per-word logits)")


@dataclass
class Rows:
    """The student's training sentences and where the teacher's logits of each are."""

    split: TokenSplit  # (R,) the labelled sentences, then the transfer sentences (tags None on those)
    teacher_sentence: np.ndarray  # (R,) int64 each row's sentence in the caches' joint numbering
    labelled: int  # the first `labelled` rows carry tags
    transfer: dict[str, int]  # transfer set -> sentences of it used
    logits: TeacherLogits | None = None  # the caches' per-word logits, (N_words, C) (None: the teacher is not read)
    offsets: np.ndarray | None = None  # (S + 1,) int64 each joint sentence's first row in `logits`

    @property
    def transfer_sets(self) -> list[str]:
        return list(self.transfer)

    @property
    def transfer_rows(self) -> int:
        return len(self.split) - self.labelled


def training_rows(cfg: StudentConfig, teacher, data, kept: np.ndarray, transfer: dict[str, TokenSplit]) -> Rows:
    """The labelled sentences ``kept`` (indices of the training split) and the transfer sentences,
    capped at ``transfer_rows`` in all (a sample seeded by the data seed, set order kept)."""
    labelled = data.train.subset(kept)
    parts, joint, base = [labelled], [kept.astype(np.int64)], len(data.train)
    names, sizes = [], []
    for name, split in transfer.items():
        parts.append(split)
        joint.append(base + np.arange(len(split), dtype=np.int64))
        base += len(split)
        names.append(name)
        sizes.append(len(split))
    picked = np.arange(sum(sizes))  # (T,) which transfer sentences are used
    if cfg.transfer_rows is not None and len(picked) > cfg.transfer_rows:
        picked = np.sort(np.random.default_rng([teacher.data.seed, 2]).choice(len(picked), cfg.transfer_rows,
                                                                              replace=False))
    sentences = [s for p in parts[1:] for s in p.sentences]
    split = TokenSplit(sentences=labelled.sentences + [sentences[i] for i in picked],
                       tags=labelled.tags + [None] * len(picked), source="training sentences")
    which = np.searchsorted(np.cumsum(sizes), picked, side="right")  # (T,) the set of each picked sentence
    used = {name: int((which == k).sum()) for k, name in enumerate(names)}
    all_transfer = np.concatenate(joint[1:]) if len(joint) > 1 else np.zeros(0, np.int64)
    return Rows(split=split, teacher_sentence=np.concatenate([joint[0], all_transfer[picked]]),
                labelled=len(kept), transfer=used)


def pseudo_label(train_set, rows: Rows, logits: TeacherLogits, offsets: np.ndarray) -> int:
    """Give the transfer sentences' words the teacher's argmax tag (in place); returns how many."""
    sentences = np.arange(rows.labelled, len(rows.split))
    done = 0
    for start in range(0, len(sentences), 4096):  # bounded memory: (B, W) grids of a chunk
        chunk = sentences[start:start + 4096]
        _, mask, index = train_set.grid(chunk)
        t_rows = teacher_rows(offsets, rows.teacher_sentence[chunk], mask.shape[1])
        has = mask & (t_rows >= 0)
        train_set.word_labels[index[has]] = logits[t_rows[has]].argmax(axis=1)
        done += int(has.sum())
    return done


@dataclass
class NerSets:
    """A tagger student's sentences in its own sub-tokens, aligned to the words."""

    words: WordAligned  # the training sentences (their transfer words pseudo-labelled in place, if asked)
    eval: WordAligned  # the sentences checkpoints are chosen on
    dev: WordAligned  # dev, measured once at the end
    no_teacher: int  # student words with no teacher row (the teacher's max length cut them): masked
    pseudo: int  # transfer words given the teacher's argmax tag (--pseudo_labels=true)

    @property
    def train(self):  # what the loop batches
        return self.words.tokens


@dataclass
class NerLoss:
    """The loss of a batch at word level: w_kd * T² * KL + w_ce * CE over the batch's words
    (``kd_loss``, the fused kernel on CUDA); words without teacher logits are masked."""

    cfg: StudentConfig  # the weights and the temperature
    rows: Rows  # the training sentences and the teacher's cached logits of their words
    words: WordAligned  # the training sentences in the student's sub-tokens
    num_labels: int  # C, the tag count
    device: torch.device  # where the batch is

    def __call__(self, outputs, batch_rows: np.ndarray, batch: dict) -> tuple[torch.Tensor, dict]:
        cfg, rows = self.cfg, self.rows
        words, labels, mask, width = word_batch(outputs.logits.float(), self.words, batch_rows)  # (B*W, C), (B*W,) x2
        t_words = np.zeros((len(labels), self.num_labels), dtype=np.float32)  # (B * W, C)
        row_mask = mask
        kd_on = cfg.w_kd > 0
        if kd_on:
            t_rows = teacher_rows(rows.offsets, rows.teacher_sentence[batch_rows], width).reshape(-1)  # (B * W,) -1: none
            has = t_rows >= 0
            t_words[has] = rows.logits[t_rows[has]]  # only this batch's rows are read from the memory maps
            row_mask = mask & torch.from_numpy(has).to(self.device)
        # transfer words carry NO_LABEL (= IGNORE_INDEX): the KD term alone reads them
        kd = kd_loss(words, torch.from_numpy(t_words).to(self.device), labels, temperature=cfg.temperature,
                     w_kd=cfg.w_kd, w_ce=cfg.w_ce, ignore_index=IGNORE_INDEX, row_mask=row_mask)
        terms = {"ce": kd.ce.item(), "kd": kd.kd.item()} if kd_on else {"ce": kd.ce.item()}
        return kd.loss, terms  # kd.loss = w_kd * T² * KL + w_ce * CE over the batch's words


class Ner:
    """A tagger's student: the parts ``train_student`` plugs in for a teacher of task ner."""

    presets = NER_PRESETS
    unit = "sentences"
    speed_unit = "sentences"

    def settings(self, cfg: StudentConfig, *, role: str) -> StudentConfig:
        check_ner_settings(cfg)
        return control_settings(cfg) if role == "student_ce" else cfg

    def load_data(self, teacher: ModelInfo, *, teacher_dir: Path) -> NerDataset:
        data = load_ner_dataset(teacher.data)
        check_labels(teacher_dir, teacher.labels, data.tag_map.names, what="tags")
        return data

    def rows(self, cfg: StudentConfig, inputs: StageInputs) -> Rows:
        """The labelled sentences kept and the transfer sentences, with the teacher's cached logits
        when the loss reads them (each cache checked against its fingerprint, sentence hashes and
        offsets before the first step)."""
        teacher, data = inputs.teacher, inputs.data
        reads_teacher = cfg.w_kd > 0 or cfg.pseudo_labels
        names = transfer_names(cfg, inputs) if reads_teacher else []
        transfer = {n: read_ner_transfer(teacher.transfer[n], dataset=data, spec=teacher.data)[0] for n in names}
        rows = training_rows(cfg, teacher, data, inputs.kept, transfer)
        if not reads_teacher:
            return rows
        caches = [open_word_cache(inputs.teacher_dir, teacher, name=name, split=split,
                                  data_files=split_files(name, data, teacher.transfer.get(name)))
                  for name, split in {"train": data.train, **transfer}.items()]
        return dataclasses.replace(rows, logits=TeacherLogits([c.logits for c in caches]),
                                   offsets=joint_offsets([c.offsets for c in caches]))

    def model(self, cfg: StudentConfig, inputs: StageInputs, rows: Rows) -> Student:
        from transformers import AutoTokenizer

        model, tokenizer_source, description = build_student(cfg, teacher_dir=inputs.teacher_dir,
                                                             id2label=inputs.teacher.id2label, task="ner")
        return Student(model=model, tokenizer=AutoTokenizer.from_pretrained(tokenizer_source),
                       description=description, long_text=LongText(), figures={})

    def encode_rows(self, cfg: StudentConfig, inputs: StageInputs, rows: Rows, student: Student) -> NerSets:
        """The sentences in the student's own sub-tokens; the transfer words pseudo-labelled if asked."""
        label2id = inputs.data.tag_map.label2id
        train_set = align_words(student.tokenizer, rows.split, label2id, cfg.max_length)
        dev_set = align_words(student.tokenizer, inputs.data.dev, label2id, cfg.max_length)
        eval_set = dev_set if inputs.eval_name == "dev" else align_words(student.tokenizer, inputs.eval_rows, label2id,
                                                                         cfg.max_length)
        no_teacher = 0
        if rows.offsets is not None:
            no_teacher = int(np.maximum(train_set.kept - np.diff(rows.offsets)[rows.teacher_sentence], 0).sum())
        if inputs.rank == 0 and no_teacher:
            print(f"{inputs.out.name}: {no_teacher} student words have no teacher logits (the teacher's max_length "
                  f"{inputs.teacher.max_length} cut them): masked")
        pseudo = pseudo_label(train_set, rows, rows.logits, rows.offsets) if cfg.pseudo_labels else 0
        return NerSets(words=train_set, eval=eval_set, dev=dev_set, no_teacher=no_teacher, pseudo=pseudo)

    def online_teacher(self, cfg: StudentConfig, inputs: StageInputs, rows: Rows, student: Student) -> None:
        return None  # a tagger's student reads the cached per-word logits only (check_ner_settings)

    def loss(self, cfg: StudentConfig, inputs: StageInputs, rows: Rows, student: Student, sets: NerSets,
             teacher: None) -> tuple[nn.Module, NerLoss]:
        return student.model.to(inputs.device), NerLoss(cfg=cfg, rows=rows, words=sets.words,
                                                        num_labels=len(inputs.teacher.labels), device=inputs.device)

    def evaluate(self, cfg: StudentConfig, inputs: StageInputs, sets: NerSets):
        return ner_evaluate(sets.eval, inputs.eval_rows, inputs.teacher.labels, batch_size=cfg.eval_batch_size,
                            device=inputs.device, amp=cfg.amp and inputs.device.type == "cuda")

    def plan(self, cfg: StudentConfig, inputs: StageInputs, rows: Rows, sets: NerSets) -> str:
        return (f", {int(sets.words.kept.sum())} words | w_kd {cfg.w_kd} w_ce {cfg.w_ce} T {cfg.temperature} | "
                f"{cfg.epochs} epochs, patience {cfg.patience} | checkpoints chosen on {len(inputs.eval_rows)} "
                f"{inputs.eval_name} sentences | "
                f"{'cached per-word logits' if rows.logits is not None else 'no teacher (CE only)'}")

    def report(self, cfg: StudentConfig, inputs: StageInputs, rows: Rows, student: Student, sets: NerSets,
               best: nn.Module) -> dict:
        logits = predict_word_logits(best, sets.dev, batch_size=cfg.eval_batch_size, device=inputs.device)
        metrics = ner_metrics(logits, sets.dev, inputs.data.dev, inputs.teacher.labels)
        return {"task": "ner", "entity_f1": metrics["f1"], **metrics, "transfer_used": rows.transfer,
                "pseudo_labelled_words": sets.pseudo, "epochs": cfg.epochs, "patience": cfg.patience,
                "evals_per_epoch": cfg.evals_per_epoch, "evals": cfg.evals, "train_words": int(sets.words.kept.sum()),
                "words_without_teacher_logits": sets.no_teacher, "train_alignment": sets.words.summary()}

    def scores(self, result: dict) -> str:
        return (f"dev entity F1 {result['f1']:.4f} (P {result['precision']:.4f}, R {result['recall']:.4f}), "
                f"token accuracy {result['token_accuracy']:.4f}")


NER = Ner()
