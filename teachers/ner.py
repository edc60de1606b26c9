"""The teacher stage for token classification: ``--task=ner``.

    python -m distill teacher --task=ner --data DIR --run-dir RUN [--preset quick] [--key=value ...]
    make teacher TASK=ner DATA=DIR RUN=RUN

``teachers/finetune.py``'s ``run`` runs a ``TeacherConfig`` with ``task="ner"`` through the teacher
skeleton (teachers/stage.py) with ``NerTeacher``, this task's parts (its lr and pooling already
decided by ``resolve_defaults``): the same base models, strategies (full, top-n, frozen, LoRA),
learning-rate defaults, training loop (distill/trainer.py) and closing as classification's. The data is a CoNLL or
JSONL dataset (distill/ner_data.py: tag schemes, bad lines); the model an
``AutoModelForTokenClassification`` over the IOB2 tag map; each word's tag sits on its first
sub-token (distill/ner.py); checkpoints are chosen on entity micro-F1.

Writes ``<run-dir>/teacher/`` as the classification teacher does (HF model and tokenizer,
``distill.json`` with task ``ner``, ``train_config.json``, ``metrics.json`` with entity P/R/F1 per
type) and ``logits/train.npy``: one row of logits per kept word of every training sentence, with
``train.offsets.npy`` saying which rows are each sentence's (a ragged cache: fingerprinted,
chunked, atomic, resumable), and the same per-word cache of every transfer set: label-free
sentences (the unused training sentences, the dataset's unlabeled file, or any file of sentences:
distill/ner_transfer.py), each ``logits/<name>.npy`` with its offsets. ``python -m distill score``
adds more sets to a finished teacher. Sentence pairs, ``long_text`` other than truncate,
``dedupe``, ``cache_cls`` and augmented transfer sets are classification's; asking for them with
``task=ner`` is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distill.config import ConfigError
from distill.data import DEFAULT_DATA, LabelMap
from distill.kd_defaults import IGNORE_INDEX
from distill.modeling import load_classifier
from distill.ner import (
    align_words,
    ner_evaluate,
    ner_metrics,
    predict_word_logits,
    score_sentences,
    word_batch,
)
from distill.ner_data import NerDataset, NerSpec, TokenSplit, load_ner_dataset
from distill.ner_transfer import check_sources, file_keys, read_ner_transfer
from distill.scoring import SavedTeacher, split_files
from distill.tokens import LongText
from distill.trainer import holdout_indices
from distill.transfer import resolve_sources
from teachers.stage import Opened, Rows


def check_ner_settings(cfg) -> None:
    """Raise ``ConfigError`` for TeacherConfig settings that only classification has."""
    if cfg.data == DEFAULT_DATA:
        raise ConfigError("--task=ner needs --data=<a NER dataset directory> (train and dev splits, CoNLL or JSONL; "
                          "distill/ner_data.py): the project carries no NER dataset")
    given = {"text_pair_column": cfg.text_pair_column, "dedupe": cfg.dedupe, "cache_cls": cfg.cache_cls,
             "long_text": cfg.long_text != "truncate", "pooling": cfg.pooling == "mean",
             "transfer_text_column": cfg.transfer_text_column}
    wrong = [name for name, value in given.items() if value]
    if wrong:
        raise ConfigError(f"--task=ner: {', '.join('--' + w for w in wrong)} apply to classification only "
                          "(ner: single sentences cut at max_length, no pooling, transfer files of sentences)")
    check_sources(cfg.transfer, cfg.augment_factor)


class NerTeacher:
    """Task ner's parts of the teacher stage (teachers/stage.py, ``TeacherTask``): a tag per word,
    on the word's first sub-token; checkpoints chosen on entity micro-F1; one row of logits per
    kept word cached (a ragged cache, PyTorch-scored)."""

    def load(self, cfg) -> tuple[NerSpec, NerDataset, LabelMap]:
        check_ner_settings(cfg)
        spec = cfg.ner_spec()
        data = load_ner_dataset(spec)
        if cfg.holdout_rows >= len(data.train) - 1:
            raise ConfigError(f"--holdout_rows={cfg.holdout_rows}: {data.train.source} has {len(data.train)} training "
                              "sentences; hold back fewer (the NER presets hold back 200 to choose checkpoints on)")
        return spec, data, data.tag_map

    def transfer_sources(self, cfg, spec: NerSpec, data: NerDataset, tokenizer) -> tuple[dict, list[str]]:
        return resolve_sources(cfg.transfer, spec=spec, dataset=data,
                               file_keys=file_keys(cfg.transfer_format, cfg.transfer_word_pattern),
                               max_rows=cfg.transfer_rows, augment_factor=0, mask_token="", seed=cfg.seed)

    def read_transfer(self, source: dict, data: NerDataset, spec: NerSpec) -> tuple[TokenSplit, dict]:
        return read_ner_transfer(source, dataset=data, spec=spec)

    def model(self, cfg, labels: LabelMap):
        return load_classifier(cfg.base_model, id2label=labels.id2label, dropout=cfg.dropout, task="ner")

    def long_text(self, cfg) -> LongText:
        return LongText()  # sentences are cut at the end (check_ner_settings refuses the rest)

    def rows(self, run: Opened, params: dict) -> Rows:
        cfg, data, names = run.cfg, run.data, run.labels.names
        kept, held = holdout_indices(len(data.train), cfg.holdout_rows, seed=run.spec.seed)
        train_rows = data.train.subset(kept)
        eval_rows, eval_name = (data.train.subset(held), "holdout") if len(held) else (data.dev, "dev")

        def aligned(split: TokenSplit):
            return align_words(run.tokenizer, split, run.labels.label2id, cfg.max_length)

        train_set, dev_set = aligned(train_rows), aligned(data.dev)
        eval_set = dev_set if eval_name == "dev" else aligned(eval_rows)
        types = sorted({name[2:] for name in names if name != "O"})
        opening = (f"teacher (ner): {cfg.base_model} | strategy {cfg.strategy} | {params['parameters']:,} parameters, "
                   f"{params['trainable_parameters']:,} trainable | {len(names)} tags ({len(types)} entity types, "
                   f"{data.tag_scheme.upper()} in the files) | {len(train_rows)} train sentences, checkpoints chosen "
                   f"on {len(eval_rows)} {eval_name} sentences | {len(data.dev)} dev | {run.device}")
        return Rows(train=train_rows, eval=eval_rows, eval_name=eval_name, train_set=train_set, eval_set=eval_set,
                    dev_set=dev_set, batches=train_set.tokens, opening=opening,
                    lines=alignment_lines(cfg.max_length, train=train_set, dev=dev_set) + transfer_lines(run),
                    checks={})

    def loss(self, rows: Rows, device: torch.device):
        def loss_fn(outputs, batch_rows, batch):
            words, labels, _, _ = word_batch(outputs.logits.float(), rows.train_set, batch_rows)  # (B * W, C), (B * W,)
            ce = F.cross_entropy(words, labels, ignore_index=IGNORE_INDEX)  # mean over the batch's words
            return ce, {"ce": ce.item()}

        return loss_fn

    def evaluate(self, run: Opened, rows: Rows):
        return ner_evaluate(rows.eval_set, rows.eval, run.labels.names, batch_size=run.cfg.eval_batch_size,
                            device=run.device, amp=run.cfg.amp and run.device.type == "cuda")

    def dev_logits(self, run: Opened, teacher: SavedTeacher, rows: Rows) -> np.ndarray:
        return predict_word_logits(teacher.model, rows.dev_set, batch_size=run.cfg.eval_batch_size,
                                   device=teacher.device, amp=run.cfg.amp)  # (N, C) per kept dev word

    def score(self, run: Opened, teacher: SavedTeacher, rows: Rows, dev_logits: np.ndarray) -> dict:
        return {"cache": score_caches(teacher, run)}

    def metrics(self, run: Opened, rows: Rows, dev_logits: np.ndarray) -> dict:
        data = run.data
        metrics = ner_metrics(dev_logits, rows.dev_set, data.dev, run.labels.names)
        return {"task": "ner", "entity_f1": metrics["f1"], **metrics, "train_words": int(rows.train_set.words.sum()),
                "tag_scheme": data.tag_scheme, "repaired_tags": data.repaired,
                "train_alignment": rows.train_set.summary()}

    def done_line(self, result: dict, out: Path) -> str:
        return (f"teacher done: dev entity F1 {result['f1']:.4f} (P {result['precision']:.4f}, R "
                f"{result['recall']:.4f}, {result['entities']} entities), token accuracy "
                f"{result['token_accuracy']:.4f}, train {result['train_time_s']:.0f}s -> {out}")


def alignment_lines(max_length: int, **sets) -> list[str]:
    """One line per aligned set (name -> WordAligned) that max_length cut or that has words making no token."""
    return [f"data: max_length {max_length} cuts {aligned.words_cut} words at the end of {aligned.sentences_cut} "
            f"{name} sentences; {aligned.empty_words} words make no token (read as the unknown token)"
            for name, aligned in sets.items() if aligned.words_cut or aligned.empty_words]


def transfer_lines(run: Opened) -> list[str]:
    """One line per transfer set: what was read, dropped and kept."""
    return [f"transfer {name}: {counts['rows']} sentences ({counts['read']} read, {counts['dropped_dev']} also dev "
            f"sentences dropped, {counts['skipped_empty']} empty skipped)" for name, (_, counts) in run.transfer.items()]


def score_caches(teacher: SavedTeacher, run: Opened) -> dict:
    """Score each set of ``run.sets()`` into its per-word cache (resumable; every rank of a group
    scores its share); returns name -> ``score_sentences``'s report."""
    caches, settings, out = {}, run.cfg.cache_settings(), run.out
    for name, split in run.sets().items():
        caches[name] = cache = score_sentences(teacher, name=name, split=split, settings=settings,
                                               data_files=split_files(name, run.data, run.sources.get(name)))
        if run.rank == 0 and not cache["complete"]:
            print(f"cache {name}: time box reached after {cache['rows_scored_this_call']} of {cache['rows']} "
                  "sentences; rerun to score the rest")
        elif run.rank == 0:
            print(f"cache {name}: {cache['rows']} sentences, {cache['logit_rows']} word rows, "
                  f"{cache['bytes'] / 1e6:.2f} MB {cache['dtype']} in {cache['seconds']:.1f}s "
                  f"({cache['rows_per_s']:.0f} sentences/s) -> {out / 'logits' / (name + '.npy')}")
    return caches
