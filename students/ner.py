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
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from distill.artifacts import ModelInfo, read_model_info
from distill.cache import TeacherLogits, joint_offsets
from distill.config import ConfigError
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
from distill.ner_data import TokenSplit, load_ner_dataset
from distill.ner_transfer import read_ner_transfer
from distill.scoring import split_files
from distill.stage import finish_stage
from distill.trainer import holdout_indices, loop_figures, save_model_dir, setup_distributed, train
from students.build import build_student
from students.config import StudentConfig


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


def train_ner_student(cfg: StudentConfig, *, teacher_dir: Path, out: Path, role: str) -> dict:
    """One student run: the KD student (``role="student"``) or the CE-only control
    (``role="student_ce"``). Returns its metrics."""
    from transformers import AutoTokenizer

    check_ner_settings(cfg)
    device = setup_distributed(cfg.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    teacher = read_model_info(teacher_dir, hint="make teacher")
    data = load_ner_dataset(teacher.data)
    tags = teacher.labels
    if data.tag_map.names != tags:
        raise ConfigError(f"{teacher_dir / 'distill.json'}: tags {tags} but the data now has {data.tag_map.names}")
    if role == "student_ce":
        cfg = dataclasses.replace(cfg, w_kd=0.0, w_ce=1.0, use_transfer=False, pseudo_labels=False,
                                  epochs=cfg.ce_epochs or cfg.epochs)
    label2id = data.tag_map.label2id
    kept, held = holdout_indices(len(data.train), cfg.holdout_rows, seed=teacher.data.seed)
    eval_rows, eval_name = (data.train.subset(held), "holdout") if len(held) else (data.dev, "dev")
    reads_teacher = cfg.w_kd > 0 or cfg.pseudo_labels
    names = (cfg.transfer or list(teacher.transfer)) if cfg.use_transfer and reads_teacher else []
    unknown = [n for n in names if n not in teacher.transfer]
    if unknown:
        raise ConfigError(f"--transfer={unknown[0]}: the teacher scored no transfer set of that name (it has: "
                          f"{', '.join(teacher.transfer) or 'none'}; see {teacher_dir / 'distill.json'})")
    transfer = {n: read_ner_transfer(teacher.transfer[n], dataset=data, spec=teacher.data)[0] for n in names}
    rows = training_rows(cfg, teacher, data, kept, transfer)
    t_logits = offsets = None
    if reads_teacher:  # each checked against its fingerprint, sentence hashes and offsets before the first step
        caches = [open_word_cache(teacher_dir, name, max_length=teacher.max_length, split=split,
                                  data_files=split_files(name, data, teacher.transfer.get(name)))
                  for name, split in {"train": data.train, **transfer}.items()]
        t_logits, offsets = TeacherLogits([c.logits for c in caches]), joint_offsets([c.offsets for c in caches])

    torch.manual_seed(cfg.seed)
    student, tokenizer_source, description = build_student(cfg, teacher_dir=teacher_dir, id2label=teacher.id2label,
                                                           task="ner")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    train_set = align_words(tokenizer, rows.split, label2id, cfg.max_length)  # the student's own sub-tokens
    dev_set = align_words(tokenizer, data.dev, label2id, cfg.max_length)
    eval_set = dev_set if eval_name == "dev" else align_words(tokenizer, eval_rows, label2id, cfg.max_length)
    no_teacher = 0  # student words with no teacher row (the teacher's max length cut them)
    if offsets is not None:
        no_teacher = int(np.maximum(train_set.kept - np.diff(offsets)[rows.teacher_sentence], 0).sum())
    pseudo = pseudo_label(train_set, rows, t_logits, offsets) if cfg.pseudo_labels else 0
    model = student.to(device)
    num_labels = len(tags)
    kd_on = cfg.w_kd > 0

    def loss_fn(outputs, batch_rows, batch):
        words, labels, mask, width = word_batch(outputs.logits.float(), train_set, batch_rows)  # (B*W, C), (B*W,) x2
        t_words = np.zeros((len(labels), num_labels), dtype=np.float32)  # (B * W, C)
        row_mask = mask
        if kd_on:
            t_rows = teacher_rows(offsets, rows.teacher_sentence[batch_rows], width).reshape(-1)  # (B * W,) -1: none
            has = t_rows >= 0
            t_words[has] = t_logits[t_rows[has]]  # only this batch's rows are read from the memory maps
            row_mask = mask & torch.from_numpy(has).to(device)
        # transfer words carry NO_LABEL (= IGNORE_INDEX): the KD term alone reads them
        kd = kd_loss(words, torch.from_numpy(t_words).to(device), labels, temperature=cfg.temperature, w_kd=cfg.w_kd,
                     w_ce=cfg.w_ce, ignore_index=IGNORE_INDEX, row_mask=row_mask)
        terms = {"ce": kd.ce.item(), "kd": kd.kd.item()} if kd_on else {"ce": kd.ce.item()}
        return kd.loss, terms  # kd.loss = w_kd * T² * KL + w_ce * CE over the batch's words

    run_cfg = dataclasses.replace(cfg, teacher_dir=str(teacher_dir))
    info = ModelInfo(role=role, task="ner", labels=tags, max_length=cfg.max_length, data=teacher.data,
                     architecture={**description, "teacher": str(teacher_dir)})

    def save_best(trained, directory):
        save_model_dir(trained, tokenizer, directory, config=run_cfg, info=info)

    n_transfer = len(rows.split) - rows.labelled
    print(f"{out.name}: {', '.join(f'{k}={v}' for k, v in description.items())} | "
          f"{count_parameters(student)['parameters']:,} parameters | {rows.labelled} labelled + {n_transfer} "
          f"{'pseudo-labelled' if cfg.pseudo_labels else 'KD-only'} sentences ({', '.join(transfer) or 'no transfer set'}), "
          f"{int(train_set.kept.sum())} words | w_kd {cfg.w_kd} w_ce {cfg.w_ce} T {cfg.temperature} | "
          f"{cfg.epochs} epochs, patience {cfg.patience} | checkpoints chosen on {len(eval_rows)} {eval_name} "
          f"sentences | {'cached per-word logits' if t_logits is not None else 'no teacher (CE only)'} | {device}")
    if rank == 0 and no_teacher:
        print(f"{out.name}: {no_teacher} student words have no teacher logits (the teacher's max_length "
              f"{teacher.max_length} cut them): masked")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    evaluate = ner_evaluate(eval_set, eval_rows, tags, batch_size=cfg.eval_batch_size, device=device,
                            amp=cfg.amp and device.type == "cuda")
    summary = train(model, cfg=run_cfg, train_set=train_set.tokens, evaluate=evaluate, eval_name=eval_name,
                    loss_fn=loss_fn, out_dir=out, save_best=save_best)
    wall = time.perf_counter() - start
    if rank != 0:
        return {}
    best = load_classifier(str(out), id2label=teacher.id2label, task="ner").to(device)
    metrics = ner_metrics(predict_word_logits(best, dev_set, batch_size=cfg.eval_batch_size, device=device),
                          dev_set, data.dev, tags)
    result = {
        "task": "ner", "entity_f1": metrics["f1"], **metrics, **count_parameters(best), "role": role,
        "student": description, "w_kd": cfg.w_kd, "w_ce": cfg.w_ce, "temperature": cfg.temperature,
        "train_rows": len(rows.split), "labelled_rows": rows.labelled, "transfer_rows": n_transfer,
        "transfer": list(transfer), "transfer_used": rows.transfer, "pseudo_labels": cfg.pseudo_labels,
        "pseudo_labelled_words": pseudo, "epochs": cfg.epochs, "patience": cfg.patience,
        "evals_per_epoch": cfg.evals_per_epoch,
        "train_words": int(train_set.kept.sum()), "words_without_teacher_logits": no_teacher,
        "train_alignment": train_set.summary(), "checkpoint_chosen_on": eval_name, "eval_rows": len(eval_rows),
        "seed": cfg.seed, "samples_seen": summary["samples_seen"], "steps_done": summary["step"],
        "world_size": summary["world_size"], "device": str(device), **loop_figures(summary, wall),
    }
    finish_stage(out, result)  # metrics.json, the model card, the resume checkpoint dropped
    print(f"{out.name} done: dev entity F1 {metrics['f1']:.4f} (P {metrics['precision']:.4f}, "
          f"R {metrics['recall']:.4f}), token accuracy {metrics['token_accuracy']:.4f}, "
          f"{result['train_samples_per_s']:.1f} train sentences/s, {summary['step']} steps -> {out}")
    return result
