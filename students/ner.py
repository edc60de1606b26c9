"""The student stage for token classification: a teacher whose ``distill.json`` says task ``ner``.

    python -m distill distill --run-dir RUN [--preset quick] [--key=value ...]   (the task comes from the teacher)

``students/distill.py``'s ``main`` hands a ``StudentConfig`` here when the teacher is a token
classifier. The same builders (``students/build.py``: layer subset, another pretrained model with its
own tokenizer, fresh), the same loop, and the same loss at token level: one row per word
(distill/losses.py's convention), the student's logits at its own first sub-token of each word
against the teacher's cached logits of that word (``teacher/logits/train.npy``, one row per word,
memory-mapped: only the rows of a batch are read). Padding words are masked with ``row_mask``, and
so are words the teacher's max length cut (it has no logits for them; counted in metrics.json);
non-first sub-tokens are never gathered. The student's tokenizer need not be the teacher's: both
align to the same words. ``kd_loss`` runs the fused Triton kernel on CUDA, the reference elsewhere.

``role="student_ce"`` is the control: the same student on the same sentences, cross-entropy only.
Classification-only settings (layer losses, online teacher, pseudo-labels, transfer sets,
vocabulary trimming, long_text) are an error here.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from distill.artifacts import ModelInfo, read_model_info
from distill.config import ConfigError, atomic_write_text
from distill.kd_defaults import IGNORE_INDEX
from distill.losses import kd_loss
from distill.modeling import count_parameters, load_classifier
from distill.ner import (
    align_words,
    ner_evaluate,
    ner_metrics,
    open_word_cache,
    predict_word_logits,
    teacher_rows,
    word_batch,
)
from distill.ner_data import load_ner_dataset
from distill.trainer import holdout_indices, loop_figures, save_model_dir, setup_distributed, train
from students.build import build_student
from students.config import StudentConfig


def check_ner_settings(cfg: StudentConfig) -> None:
    """Raise ``ConfigError`` for StudentConfig settings that only classification has."""
    given = {"w_hidden": cfg.w_hidden > 0, "w_attn": cfg.w_attn > 0, "online": cfg.online,
             "pseudo_labels": cfg.pseudo_labels, "transfer": bool(cfg.transfer), "trim_vocab": cfg.trim_vocab,
             "long_text": cfg.long_text != "truncate"}
    wrong = [name for name, value in given.items() if value]
    if wrong:
        raise ConfigError(f"task ner (from the teacher's distill.json): {', '.join('--' + w for w in wrong)} apply to "
                          "classification only (ner distils the cached per-word logits)")


def train_ner_student(cfg: StudentConfig, *, teacher_dir: Path, out: Path, role: str) -> dict:
    """One student run: the KD student (``role="student"``) or the CE-only control
    (``role="student_ce"``). Returns its metrics."""
    from transformers import AutoTokenizer

    check_ner_settings(cfg)
    device = setup_distributed(cfg.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    teacher = read_model_info(teacher_dir, hint="make teacher")
    data = load_ner_dataset(teacher.data)
    names = teacher.labels
    if data.tag_map.names != names:
        raise ConfigError(f"{teacher_dir / 'distill.json'}: tags {names} but the data now has {data.tag_map.names}")
    if role == "student_ce":
        cfg = dataclasses.replace(cfg, w_kd=0.0, w_ce=1.0, epochs=cfg.ce_epochs or cfg.epochs)
    label2id = data.tag_map.label2id
    kept, held = holdout_indices(len(data.train), cfg.holdout_rows, seed=teacher.data.seed)
    rows = data.train.subset(kept)  # train row r is sentence kept[r] of the teacher's cache
    eval_rows, eval_name = (data.train.subset(held), "holdout") if len(held) else (data.dev, "dev")
    cache = None
    if cfg.w_kd > 0:  # checked against its fingerprint, sentence hashes and offsets before the first step
        cache = open_word_cache(teacher_dir, "train", max_length=teacher.max_length, data_files=data.files,
                                split=data.train)

    torch.manual_seed(cfg.seed)
    student, tokenizer_source, description = build_student(cfg, teacher_dir=teacher_dir, id2label=teacher.id2label,
                                                           task="ner")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    train_set = align_words(tokenizer, rows, label2id, cfg.max_length)  # the student's own sub-tokens
    dev_set = align_words(tokenizer, data.dev, label2id, cfg.max_length)
    eval_set = dev_set if eval_name == "dev" else align_words(tokenizer, eval_rows, label2id, cfg.max_length)
    no_teacher = 0  # student words with no teacher row (the teacher's max length cut them)
    if cache is not None:
        no_teacher = int(np.maximum(train_set.kept - np.diff(cache.offsets)[kept], 0).sum())
    model = student.to(device)
    num_labels = len(names)

    def loss_fn(outputs, batch_rows, batch):
        words, labels, mask, width = word_batch(outputs.logits.float(), train_set, batch_rows)  # (B*W, C), (B*W,) x2
        t_words = np.zeros((len(labels), num_labels), dtype=np.float32)  # (B * W, C)
        row_mask = mask
        if cache is not None:
            t_rows = teacher_rows(cache.offsets, kept[batch_rows], width).reshape(-1)  # (B * W,) -1: none
            has = t_rows >= 0
            t_words[has] = cache.logits[t_rows[has]]  # only this batch's rows are read from the memory map
            row_mask = mask & torch.from_numpy(has).to(device)
        kd = kd_loss(words, torch.from_numpy(t_words).to(device), labels, temperature=cfg.temperature, w_kd=cfg.w_kd,
                     w_ce=cfg.w_ce, ignore_index=IGNORE_INDEX, row_mask=row_mask)
        terms = {"ce": kd.ce.item(), "kd": kd.kd.item()} if cache is not None else {"ce": kd.ce.item()}
        return kd.loss, terms  # kd.loss = w_kd * T² * KL + w_ce * CE over the batch's words

    run_cfg = dataclasses.replace(cfg, teacher_dir=str(teacher_dir))
    info = ModelInfo(role=role, task="ner", labels=names, max_length=cfg.max_length, data=teacher.data,
                     architecture={**description, "teacher": str(teacher_dir)})

    def save_best(trained, directory):
        save_model_dir(trained, tokenizer, directory, config=run_cfg, info=info)

    print(f"{out.name}: {', '.join(f'{k}={v}' for k, v in description.items())} | "
          f"{count_parameters(student)['parameters']:,} parameters | {len(rows)} sentences, "
          f"{int(train_set.kept.sum())} words | w_kd {cfg.w_kd} w_ce {cfg.w_ce} T {cfg.temperature} | "
          f"checkpoints chosen on {len(eval_rows)} {eval_name} sentences | "
          f"{'cached per-word logits' if cache is not None else 'no teacher (CE only)'} | {device}")
    if rank == 0 and no_teacher:
        print(f"{out.name}: {no_teacher} student words have no teacher logits (the teacher's max_length "
              f"{teacher.max_length} cut them): masked")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    evaluate = ner_evaluate(eval_set, eval_rows, names, batch_size=cfg.eval_batch_size, device=device,
                            amp=cfg.amp and device.type == "cuda")
    summary = train(model, cfg=run_cfg, train_set=train_set.tokens, evaluate=evaluate, eval_name=eval_name,
                    loss_fn=loss_fn, out_dir=out, save_best=save_best)
    wall = time.perf_counter() - start
    if rank != 0:
        return {}
    best = load_classifier(str(out), id2label=teacher.id2label, task="ner").to(device)
    metrics = ner_metrics(predict_word_logits(best, dev_set, batch_size=cfg.eval_batch_size, device=device),
                          dev_set, data.dev, names)
    result = {
        "task": "ner", "entity_f1": metrics["f1"], **metrics, **count_parameters(best), "role": role,
        "student": description, "w_kd": cfg.w_kd, "w_ce": cfg.w_ce, "temperature": cfg.temperature,
        "train_rows": len(rows), "labelled_rows": len(rows), "transfer_rows": 0, "transfer": [],
        "train_words": int(train_set.kept.sum()), "words_without_teacher_logits": no_teacher,
        "train_alignment": train_set.summary(), "checkpoint_chosen_on": eval_name, "eval_rows": len(eval_rows),
        "seed": cfg.seed, "samples_seen": summary["samples_seen"], "steps_done": summary["step"],
        "world_size": summary["world_size"], "device": str(device), **loop_figures(summary, wall),
    }
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    shutil.rmtree(out / "checkpoint", ignore_errors=True)  # complete: the resume state is no longer needed
    print(f"{out.name} done: dev entity F1 {metrics['f1']:.4f} (P {metrics['precision']:.4f}, "
          f"R {metrics['recall']:.4f}), token accuracy {metrics['token_accuracy']:.4f}, "
          f"{result['train_samples_per_s']:.1f} train sentences/s, {summary['step']} steps -> {out}")
    return result
