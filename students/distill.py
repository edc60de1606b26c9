"""The student stage: train a smaller model on the teacher's cached logits and the hard labels.

    python -m distill distill --run-dir runs/demo --preset quick [--key=value ...]

Reads ``<run-dir>/teacher/`` (its ``distill.json`` says which data, labels, max length and
transfer sets; ``logits/`` holds the scores) and writes ``<run-dir>/student/`` (the KD student)
and, unless ``--student_ce=false``, ``<run-dir>/student_ce/``: the same student trained on the
labelled rows with cross-entropy only, the control that says what distillation added. Ends by
writing ``<run-dir>/report.md``.

The training rows are the teacher's labelled rows plus its transfer sets (KD-only rows: no hard
label, or the teacher's argmax with ``--pseudo_labels=true``). Each cache's fingerprint and
per-row text hashes are checked before the first step.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from distill import layout
from distill.artifacts import ModelInfo, claim_run_dir, read_model_info
from distill.cache import TeacherLogits, cache_parts, open_logit_cache
from distill.config import ConfigError, apply_overrides
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
from distill.scoring import cls_cache_name, split_files
from distill.stage import finish_stage
from distill.tokens import encode
from distill.trainer import (
    classification_evaluate,
    holdout_indices,
    peak_rss_mb,
    predict_logits,
    save_model_dir,
    setup_distributed,
    train,
)
from distill.transfer import read_transfer
from distill.trim_vocab import trim_to_rows
from students.build import build_student, freeze_word_embeddings
from students.config import NER_PRESETS, PRESETS, StudentConfig


class WithLayerOutputs(nn.Module):
    """The student plus the projections of the layer loss; its forward asks the student for the
    hidden states and attention maps that loss needs. Only ``student`` is saved."""

    def __init__(self, student: nn.Module, projections: Projections, *, attentions: bool):
        super().__init__()
        self.student, self.projections, self.attentions = student, projections, attentions

    def forward(self, **batch):
        return self.student(**batch, output_hidden_states=True, output_attentions=self.attentions)


def open_caches(teacher_dir: Path, info: ModelInfo, data: Dataset, names: list[str], *, cls: bool = False,
                logits: bool = True) -> tuple[TeacherLogits | None, dict[str, Split], TeacherLogits | None]:
    """The teacher's logits for the training split and the named transfer sets, each checked
    against its fingerprint and text hashes, the rows of each transfer set, and (``cls``) the
    cached per-layer [CLS] states of the same rows. ``logits=False`` (the teacher runs online):
    only the rows; a cache that is unfinished or absent is then no obstacle."""
    splits = {"train": data.train}
    for name in names:
        if name not in info.transfer:
            raise ConfigError(f"--transfer={name}: the teacher scored no transfer set of that name "
                              f"(it has: {', '.join(info.transfer) or 'none'}; see {teacher_dir / 'distill.json'})")
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


def train_student(cfg: StudentConfig, *, teacher_dir: Path, out: Path, role: str) -> dict:
    """One student run: the KD student (``role="student"``) or the CE-only control
    (``role="student_ce"``: labelled rows, CE only). Returns its metrics."""
    from transformers import AutoTokenizer

    device = setup_distributed(cfg.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    teacher = read_model_info(teacher_dir, hint="make teacher")
    data = load_dataset(teacher.data)
    names = teacher.labels
    if data.label_map.names != names:
        raise ConfigError(f"{teacher_dir / 'distill.json'}: labels {names} but the data now has {data.label_map.names}")
    if role == "student_ce":
        cfg = dataclasses.replace(cfg, w_kd=0.0, w_ce=1.0, w_hidden=0.0, w_attn=0.0, use_transfer=False,
                                  pseudo_labels=False, online=False, epochs=cfg.ce_epochs or cfg.epochs,
                                  patience=cfg.ce_patience)
    transfer_names = (cfg.transfer or list(teacher.transfer)) if cfg.use_transfer else []
    if cfg.layer_source not in ("online", "cached"):
        raise ConfigError(f"--layer_source={cfg.layer_source!r}: expected online or cached")
    cached_layers = cfg.layer_source == "cached" and cfg.w_hidden > 0
    if cached_layers and cfg.w_attn > 0:
        raise ConfigError("--w_attn needs the teacher online (attention maps are not cached); use --layer_source=online")
    layers_on = cfg.w_hidden > 0 or cfg.w_attn > 0
    online = cfg.online or (layers_on and not cached_layers)  # the teacher runs every step
    teacher_logits, transfer, teacher_cls = open_caches(teacher_dir, teacher, data, transfer_names, cls=cached_layers,
                                                        logits=cfg.pseudo_labels or not online)

    # The rows: labelled training rows (minus the held-back checkpoint rows), then transfer rows.
    kept, held = holdout_indices(len(data.train), cfg.holdout_rows, seed=teacher.data.seed)
    parts, global_rows, offset = [data.train.subset(kept)], [kept], len(data.train)
    labels = [data.label_map.encode(parts[0])]
    for split in transfer.values():
        global_rows.append(offset + np.arange(len(split)))
        parts.append(split)
        offset += len(split)
    teacher_rows = np.concatenate(global_rows)  # (R,) row of each training row in teacher_logits
    if cfg.transfer_rows is not None and len(teacher_rows) - len(kept) > cfg.transfer_rows:
        rng = np.random.default_rng([teacher.data.seed, 2])
        pick = np.sort(rng.choice(np.arange(len(kept), len(teacher_rows)), cfg.transfer_rows, replace=False))
        teacher_rows = np.concatenate([teacher_rows[: len(kept)], teacher_rows[pick]])
        rows = Split.concat(parts, source="training rows").subset(np.concatenate([np.arange(len(kept)), pick]))
    else:
        rows = Split.concat(parts, source="training rows")
    n_transfer = len(rows) - len(kept)
    if cfg.pseudo_labels:  # self-training: the teacher's argmax as the transfer rows' label
        labels.append(teacher_logits[teacher_rows[len(kept):]].argmax(axis=1).astype(np.int64))
    else:
        labels.append(np.full(n_transfer, IGNORE_INDEX, dtype=np.int64))
    row_labels = np.concatenate(labels)  # (R,)
    eval_rows, eval_name = (data.train.subset(held), "holdout") if len(held) else (data.dev, "dev")

    attn = "eager" if cfg.w_attn > 0 else None  # SDPA returns no attention maps
    torch.manual_seed(cfg.seed)
    student, tokenizer_source, description = build_student(cfg, teacher_dir=teacher_dir, id2label=teacher.id2label,
                                                           attn=attn)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    trimmed = {}
    if cfg.trim_vocab:  # keep the embedding rows the training rows use; dev stays unseen, only measured
        student, tokenizer, trimmed = trim_to_rows(student, tokenizer, rows, data.dev,
                                                   out / "tokens" / f"vocab_rank{rank}")
        if cfg.freeze_embeddings:  # the trimmed table is a new module: frozen again
            freeze_word_embeddings(student)
        if rank == 0:
            print(f"{out.name}: trim_vocab keeps {trimmed['vocab_after']:,} of {trimmed['embedding_rows_before']:,} "
                  f"embedding rows, {trimmed['parameters_before']:,} -> {trimmed['parameters_after']:,} parameters; "
                  f"dev: {trimmed['dev_unk_token_share']:.2%} of tokens become [UNK], "
                  f"{trimmed['dev_resegmented_row_share']:.1%} of rows tokenise differently")
    teacher_tok = AutoTokenizer.from_pretrained(teacher_dir)
    tokens_aligned = type(tokenizer) is type(teacher_tok) and tokenizer.get_vocab() == teacher_tok.get_vocab()
    if cfg.w_attn > 0 and not (tokens_aligned and cfg.max_length == teacher.max_length):
        raise ConfigError("--w_attn: attention maps can only be compared when the student reads the teacher's "
                          "tokens (its tokenizer and max_length); use --w_hidden ([CLS] states) instead")

    store = out / "tokens"
    if rank != 0 and dist.is_initialized():
        dist.barrier()  # rank 0 builds the token store first; the others then find it built
    long_text, teacher_long_text = cfg.long_text_settings(), teacher.long_text_settings()
    train_set = encode(tokenizer, rows, row_labels, cfg.max_length, long_text=long_text, store=store / "student")
    if rank == 0 and dist.is_initialized():
        dist.barrier()
    eval_set = encode(tokenizer, eval_rows, data.label_map.encode(eval_rows), cfg.max_length, long_text=long_text)
    dev_set = encode(tokenizer, data.dev, data.label_map.encode(data.dev), cfg.max_length, long_text=long_text)
    if train_set.groups is not None:  # (R_rows,) from here on: a chunk row reads its document's teacher row
        teacher_rows = teacher_rows[train_set.groups]
    data_checks, lines = stage_data_checks(
        train=rows, dev=data.dev, train_lengths=train_set.source_lengths, dev_lengths=dev_set.source_lengths,
        max_length=cfg.max_length, cut=long_text.effect(tokenizer, cfg.max_length, train_set, dev_set),
        deduped=data.deduped)
    for line in lines if rank == 0 else []:
        print(line)

    same_batches = tokens_aligned and cfg.max_length == teacher.max_length and long_text == teacher_long_text
    if online and not same_batches and long_text != teacher_long_text and (
            cfg.w_attn > 0 or "chunks" in (long_text.mode, teacher_long_text.mode)):
        raise ConfigError(f"--long_text={long_text.mode}: the online teacher must read the student's rows "
                          f"({'attention maps' if cfg.w_attn > 0 else 'chunks'}); give the student the teacher's "
                          f"long_text settings {teacher.long_text}")
    if online:  # the teacher runs every step: for layer losses, or as the baseline of cached logits
        teacher_model = load_classifier(str(teacher_dir), id2label=teacher.id2label, attn_implementation=attn)
        teacher_model = teacher_model.to(device).eval()
        teacher_set = None if same_batches else encode(teacher_tok, rows, row_labels, teacher.max_length,
                                                       long_text=teacher_long_text, store=store / "teacher")
    if cfg.w_attn > 0 and disable_attention_dropout(student) == 0:
        raise ConfigError(f"--w_attn: found no attention dropout to turn off in {type(student).__name__}; its "
                          "attention maps would be compared after dropout")
    model = student.to(device)
    pairs, teacher_width = None, None
    if layers_on:
        kept_layers = description.get("layers_kept")
        from transformers import AutoConfig

        teacher_config = AutoConfig.from_pretrained(teacher_dir)
        pairs = layer_pairs(student.config.num_hidden_layers, teacher_config.num_hidden_layers, kept_layers)
        projections = Projections(len(pairs), student.config.hidden_size, teacher_config.hidden_size)
        teacher_width = teacher_config.hidden_size
        model = WithLayerOutputs(student, projections, attentions=cfg.w_attn > 0).to(device)

    def loss_fn(outputs, rows, batch):
        if online:
            t_batch = batch if same_batches else teacher_set.batch(rows, device)
            with torch.no_grad():
                t_out = teacher_model(**t_batch, output_hidden_states=layers_on, output_attentions=cfg.w_attn > 0)
            t_logits = t_out.logits.float()  # (B, C)
        else:
            t_logits = torch.from_numpy(teacher_logits[teacher_rows[rows]]).to(device)  # (B, C)
        labels = torch.as_tensor(train_set.labels[rows], device=device)  # (B,)
        kd = kd_loss(outputs.logits.float(), t_logits, labels, temperature=cfg.temperature, w_kd=cfg.w_kd,
                     w_ce=cfg.w_ce, ignore_index=IGNORE_INDEX)
        terms = {"ce": kd.ce.item(), "kd": kd.kd.item()}
        hidden = attention = torch.zeros((), device=device)
        if cfg.w_hidden > 0 and cached_layers:  # (B, (L_t + 1) * H_t) -> one (B, 1, H_t) per teacher layer
            cls = torch.from_numpy(teacher_cls[teacher_rows[rows]]).to(device).view(len(rows), -1, teacher_width)
            hidden = hidden_loss(outputs.hidden_states, tuple(cls[:, i:i + 1] for i in range(cls.shape[1])), pairs,
                                 batch["attention_mask"], model.projections, tokens_aligned=False)
            terms["hidden"] = hidden.item()
        elif cfg.w_hidden > 0:
            hidden = hidden_loss(outputs.hidden_states, t_out.hidden_states, pairs, batch["attention_mask"],
                                 model.projections, tokens_aligned=same_batches)
            terms["hidden"] = hidden.item()
        if cfg.w_attn > 0:
            attention = attention_loss(outputs.attentions, t_out.attentions, pairs, batch["attention_mask"])
            terms["attn"] = attention.item()
        # kd.loss = w_kd * T² * KL + w_ce * CE (the fused kernel on CUDA)
        loss = kd.loss + cfg.w_hidden * hidden + cfg.w_attn * attention
        return loss, terms

    run_cfg = dataclasses.replace(cfg, teacher_dir=str(teacher_dir))
    info = ModelInfo(role=role, task=teacher.task, labels=names, max_length=cfg.max_length, data=teacher.data,
                     architecture={**description, "teacher": str(teacher_dir)}, long_text=long_text.to_dict())

    def save_best(trained, directory):
        inner = trained.student if isinstance(trained, WithLayerOutputs) else trained
        save_model_dir(inner, tokenizer, directory, config=run_cfg, info=info)

    print(f"{out.name}: {', '.join(f'{k}={v}' for k, v in description.items())} | "
          f"{count_parameters(student)['parameters']:,} parameters | {len(kept)} labelled + {n_transfer} "
          f"{'pseudo-labelled' if cfg.pseudo_labels else 'KD-only'} rows ({', '.join(transfer) or 'no transfer set'}) | "
          f"w_kd {cfg.w_kd} w_ce {cfg.w_ce} w_hidden {cfg.w_hidden} w_attn {cfg.w_attn} T {cfg.temperature} | "
          f"checkpoints chosen on {len(eval_rows)} {eval_name} rows | "
          f"{'online teacher' if online else 'cached logits'} | {device}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    evaluate = classification_evaluate(eval_set, names, batch_size=cfg.eval_batch_size, device=device,
                                       amp=cfg.amp and device.type == "cuda")
    if cfg.eval_dev and eval_name == "holdout":  # the curve of dev against passes, logged beside the choice
        on_holdout, on_dev = evaluate, classification_evaluate(dev_set, names, batch_size=cfg.eval_batch_size,
                                                               device=device, amp=cfg.amp and device.type == "cuda")
        evaluate = lambda m: {**on_holdout(m), "dev_accuracy": on_dev(m)["accuracy"]}  # noqa: E731
    summary = train(model, cfg=run_cfg, train_set=train_set, evaluate=evaluate, eval_name=eval_name,
                    loss_fn=loss_fn, out_dir=out, save_best=save_best)
    wall = time.perf_counter() - start
    if rank != 0:
        return {}
    best = load_classifier(str(out), id2label=teacher.id2label).to(device)
    metrics = classification_metrics(predict_logits(best, dev_set, batch_size=cfg.eval_batch_size, device=device),
                                     dev_set.document_labels, names)
    result = {
        **metrics, **count_parameters(best), "role": role, "student": description,
        "w_kd": cfg.w_kd, "w_ce": cfg.w_ce, "w_hidden": cfg.w_hidden, "w_attn": cfg.w_attn,
        "layer_source": cfg.layer_source if layers_on else None,
        "temperature": cfg.temperature, "transfer": list(transfer), "pseudo_labels": cfg.pseudo_labels,
        "online": online, "train_rows": len(rows), "labelled_rows": len(kept), "transfer_rows": n_transfer,
        "checkpoint_chosen_on": eval_name, "eval_rows": len(eval_rows), "seed": cfg.seed,
        "train_time_s": round(summary["train_seconds"], 2), "wall_time_s": round(wall, 2),
        "train_samples_per_s": round(summary["samples_seen"] / max(summary["train_seconds"], 1e-9), 2),
        "samples_seen": summary["samples_seen"], "best_step": summary["best_step"],
        "total_steps": summary["total_steps"], "steps_done": summary["step"],
        "stopped_early": summary["stopped_early"], "world_size": summary["world_size"], "device": str(device),
        "peak_rss_mb": peak_rss_mb(), "long_text": long_text.to_dict(), "train_model_rows": len(train_set),
        "data_checks": data_checks, **trimmed, "history": summary["history"],
    }
    finish_stage(out, result)  # metrics.json, the model card, the resume checkpoint dropped
    shutil.rmtree(store, ignore_errors=True)
    print(f"{out.name} done: dev accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
          f"{result['train_samples_per_s']:.1f} train samples/s, {summary['step']} steps -> {out}")
    return result


def parse_args(argv: list[str]) -> tuple[StudentConfig, Path]:
    """The stage's config: the preset (a tagger's teacher: NER_PRESETS), then the overrides."""
    parser = argparse.ArgumentParser(prog="python -m distill distill", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/demo", help="the run directory holding teacher/")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    args, overrides = parser.parse_known_args(argv)
    data_flags = [o for o in overrides if o.split("=", 1)[0] in ("--data", "--max_train_rows", "--text_column")]
    if data_flags:
        raise ConfigError(f"{data_flags[0]}: the student trains on the rows the teacher cached (its data is in "
                          "teacher/distill.json); retrain the teacher to change the data")
    cfg, run_dir = apply_overrides(PRESETS[args.preset], overrides), Path(args.run_dir)
    teacher_dir = teacher_of(cfg, run_dir)  # a missing teacher is main's error to report
    if (teacher_dir / "distill.json").exists() and read_model_info(teacher_dir).task == "ner":  # a tagger: its presets
        cfg = apply_overrides(NER_PRESETS[args.preset], overrides)
    check_temperature(cfg.temperature)  # T <= 0: one line now, not at the first training step
    return cfg, run_dir


def teacher_of(cfg: StudentConfig, run_dir: Path) -> Path:
    return Path(cfg.teacher_dir) if cfg.teacher_dir else layout.teacher_dir(run_dir)


def teacher_task(argv: list[str]) -> str | None:
    """The task in the teacher's distill.json (None when there is none yet: the usual error follows)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--run-dir", default="runs/demo")
    args, rest = parser.parse_known_args(argv)
    given = [o.split("=", 1)[1] for o in rest if o.startswith("--teacher_dir=")]
    teacher_dir = Path(given[-1]) if given else layout.teacher_dir(args.run_dir)
    return read_model_info(teacher_dir).task if (teacher_dir / "distill.json").is_file() else None


def main(argv: list[str]) -> int:
    if teacher_task(argv) == "lm":  # a causal LM: its own config and loss (students/lm.py)
        from students.lm import main as lm_main

        return lm_main(argv)
    cfg, run_dir = parse_args(argv)
    teacher_dir = teacher_of(cfg, run_dir)
    train_one = train_student
    if read_model_info(teacher_dir, hint="make teacher").task == "ner":  # token classification: students/ner.py
        from students.ner import train_ner_student as train_one
    claim_run_dir(run_dir, stage="distill")  # new when --teacher_dir names a teacher elsewhere
    roles = ["student", "student_ce"] if cfg.student_ce else ["student"]
    with contextlib.ExitStack() as locks:  # both folders up front: a second run stops now, not after the first model
        for role in roles:
            locks.enter_context(stage_lock(run_dir / role))
        for role in roles:
            train_one(cfg, teacher_dir=teacher_dir, out=run_dir / role, role=role)
    if dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    from distill.report import write_report

    print(f"report: {write_report(run_dir)}")
    return 0
