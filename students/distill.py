"""The student stage: train a smaller model on the teacher's cached logits and the hard labels.

    python -m distill distill --run-dir runs/demo --preset quick [--key=value ...]

Reads ``<run-dir>/teacher/`` (model, train_config.json, logits/), writes ``<run-dir>/student/``
(the KD student) and, unless ``--baseline=false``, ``<run-dir>/student_ce/``: the same student,
data, steps and seed trained with cross-entropy only — the control that says what distillation
added. Ends by writing ``<run-dir>/report.md``.

The student trains on the rows the teacher cached, so the data settings (path, columns, subset)
come from the teacher's train_config.json; the cache's fingerprint and per-row text hashes are
checked before the first step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from distill.cache import fingerprint_parts, open_logit_cache
from distill.config import ConfigError, apply_overrides, atomic_write_text, load_config
from distill.data import load_dataset, read_unlabeled
from distill.losses import DEFAULT_TEMPERATURE, DEFAULT_W_CE, DEFAULT_W_KD, IGNORE_INDEX, kd_loss
from distill.metrics import classification_metrics
from distill.modeling import PACKAGED, count_parameters, load_classifier
from distill.trainer import (
    Encoded,
    TrainConfig,
    encode,
    predict_logits,
    save_model_dir,
    setup_distributed,
    train,
)
from students.build import build_student
from teachers.finetune import TeacherConfig

DATA_KEYS = ("data", "text_column", "text_pair_column", "label_column", "max_train_rows")


@dataclass
class StudentConfig(TrainConfig):
    teacher_dir: str | None = None  # the teacher stage's output (None: <run-dir>/teacher)
    student: str = "subset"  # subset (layers of the teacher) | pretrained | fresh
    keep_layers: int = 3  # subset: how many teacher layers to keep, evenly spaced
    layer_ids: list[int] = field(default_factory=list)  # subset: explicit layer indices (overrides keep_layers)
    pretrained: str = PACKAGED  # pretrained: a model folder or hub name
    fresh_layers: int = 4  # fresh: encoder layers
    fresh_hidden: int = 256  # fresh: hidden size (FFN is 4x)
    fresh_heads: int = 4  # fresh: attention heads
    temperature: float = DEFAULT_TEMPERATURE  # softening T of the KD term
    w_kd: float = DEFAULT_W_KD  # weight of T² * KL(teacher ‖ student)
    w_ce: float = DEFAULT_W_CE  # weight of CE with the hard labels
    augment: list[str] = field(default_factory=list)  # cached unlabeled sets to add as KD-only rows
    online: bool = False  # run the teacher forward every step instead of reading the cache
    baseline: bool = True  # also train the CE-only control into <run-dir>/student_ce


PRESETS = {
    "quick": StudentConfig(max_length=64, epochs=2, batch_size=32, lr=1e-4, evals_per_epoch=1, patience=2,
                           augment=["test_unlabeled"]),
    "full": StudentConfig(max_length=128, epochs=4, batch_size=32, lr=5e-5, evals_per_epoch=2, patience=4,
                          save_every_steps=500, augment=["test_unlabeled"]),
}


def teacher_config(teacher_dir: Path) -> TeacherConfig:
    path = teacher_dir / "train_config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no teacher here; run `make teacher` (python -m distill teacher) first")
    return load_config(TeacherConfig, path)


def align_data_settings(cfg: StudentConfig, teacher: TeacherConfig, given: set[str]) -> StudentConfig:
    """The student's data settings are the teacher's; an explicit different one is an error."""
    for key in DATA_KEYS:
        if key in given and getattr(cfg, key) != getattr(teacher, key):
            raise ConfigError(f"--{key}={getattr(cfg, key)!r}: the student trains on the rows the teacher cached "
                              f"({key}={getattr(teacher, key)!r}); retrain the teacher to change the data")
    return dataclasses.replace(cfg, **{k: getattr(teacher, k) for k in DATA_KEYS})


class TeacherLogits:
    """Teacher logits for training rows: the train cache, then each augmentation cache, indexed by
    one row number (memory-mapped; only the rows of a batch are read)."""

    def __init__(self, caches: list[np.ndarray]):
        self.caches = caches  # each (R_k, C)
        self.offsets = np.cumsum([0] + [len(c) for c in caches])  # (K + 1,)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        """rows: (B,) -> (B, C) float32."""
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), self.caches[0].shape[1]), dtype=np.float32)
        for k in np.unique(which):
            sel = which == k
            out[sel] = self.caches[k][rows[sel] - self.offsets[k]]
        return out


def concat(parts: list[Encoded]) -> Encoded:
    types = None if parts[0].token_type_ids is None else [t for p in parts for t in p.token_type_ids]
    return Encoded(input_ids=[x for p in parts for x in p.input_ids], token_type_ids=types,
                   labels=np.concatenate([p.labels for p in parts]), pad_token_id=parts[0].pad_token_id)


def inference_rate(model, encoded: Encoded, *, device: torch.device, batch_size: int = 32, repeats: int = 3) -> float:
    """Median dev-set samples/s in eval mode (dynamic padding, rows sorted by length)."""
    predict_logits(model, encoded.slice(0, batch_size), batch_size=batch_size, device=device)  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_logits(model, encoded, batch_size=batch_size, device=device)
        rates.append(len(encoded) / (time.perf_counter() - t0))
    return float(np.median(rates))


def train_student(cfg: StudentConfig, *, teacher_dir: Path, out: Path, ce_only: bool) -> dict:
    """One student run (KD, or the CE-only control when ``ce_only``); returns its metrics."""
    from transformers import AutoTokenizer

    device = setup_distributed(cfg.device)
    teacher_cfg = teacher_config(teacher_dir)
    data = load_dataset(cfg.data_spec(subset_seed=teacher_cfg.seed))
    names = data.label_map.names

    # Teacher logits: checked against the fingerprint (teacher weights, tokenizer, max length, data
    # bytes, rows) and the per-row text hashes before the first step.
    splits = {"train": data.train}
    for name in cfg.augment:
        sources = [f for f in teacher_cfg.unlabeled if Path(f).stem == name]
        if not sources:
            raise ConfigError(f"--augment={name}: the teacher cached no unlabeled set of that name "
                              f"(it has: {', '.join(Path(f).stem for f in teacher_cfg.unlabeled) or 'none'})")
        splits[name] = read_unlabeled(sources[0], teacher_cfg.unlabeled_text_column)
    caches = []
    for name, split in splits.items():
        expected = fingerprint_parts(teacher_dir=teacher_dir, max_length=teacher_cfg.max_length,
                                     data_files=data.files if name == "train" else [split.source], split=split)
        cache = open_logit_cache(teacher_dir / "logits", name, expected_parts=expected)
        cache.check_rows(split)
        caches.append(cache.logits)
    teacher_logits = TeacherLogits(caches)

    torch.manual_seed(cfg.seed)
    model, tokenizer_source, description = build_student(
        cfg.student, teacher_dir=teacher_dir, id2label=data.label_map.id2label, keep_layers=cfg.keep_layers,
        layer_ids=cfg.layer_ids or None, pretrained=cfg.pretrained, fresh_layers=cfg.fresh_layers,
        fresh_hidden=cfg.fresh_hidden, fresh_heads=cfg.fresh_heads, dropout=cfg.dropout)
    model = model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)

    def encode_all(tok, max_length: int) -> Encoded:
        parts = [encode(tok, data.train, data.label_map.encode(data.train), max_length)]
        parts += [encode(tok, s, np.full(len(s), IGNORE_INDEX), max_length) for n, s in splits.items() if n != "train"]
        return concat(parts)

    train_set = encode_all(tokenizer, cfg.max_length)
    dev_set = encode(tokenizer, data.dev, data.label_map.encode(data.dev), cfg.max_length)
    w_kd, w_ce = (0.0, 1.0) if ce_only else (cfg.w_kd, cfg.w_ce)

    if cfg.online:  # the baseline a user would otherwise write: the teacher runs every step
        teacher = load_classifier(str(teacher_dir), id2label=data.label_map.id2label).to(device).eval()
        teacher_tok = AutoTokenizer.from_pretrained(teacher_dir)
        teacher_set = encode_all(teacher_tok, teacher_cfg.max_length)

    def loss_fn(logits, rows, batch):
        if cfg.online:
            with torch.no_grad():
                t_logits = teacher(**teacher_set.batch(rows, device)).logits.float()  # (B, C)
        else:
            t_logits = torch.from_numpy(teacher_logits[rows]).to(device)  # (B, C)
        labels = torch.as_tensor(train_set.labels[rows], device=device)  # (B,)
        out = kd_loss(logits, t_logits, labels, temperature=cfg.temperature, w_kd=w_kd, w_ce=w_ce,
                      ignore_index=IGNORE_INDEX)
        return out.loss, {"ce": out.ce.item(), "kd": out.kd.item()}

    run_cfg = dataclasses.replace(cfg, w_kd=w_kd, w_ce=w_ce, teacher_dir=str(teacher_dir))
    print(f"{out.name}: {', '.join(f'{k}={v}' for k, v in description.items())} | {count_parameters(model)['parameters']:,} parameters | "
          f"{len(data.train)} labelled + {len(train_set) - len(data.train)} KD-only rows | w_kd {w_kd} w_ce {w_ce} "
          f"T {cfg.temperature} | {'online teacher' if cfg.online else 'cached logits'} | {device}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = train(model, cfg=run_cfg, train_set=train_set, dev_set=dev_set, label_names=names, loss_fn=loss_fn,
                    out_dir=out, save_best=lambda m, d: save_model_dir(m, tokenizer, d, config=run_cfg,
                                                                        extra_files={}))
    wall = time.perf_counter() - start
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return {}
    best = load_classifier(str(out), id2label=data.label_map.id2label).to(device)
    metrics = classification_metrics(predict_logits(best, dev_set, batch_size=cfg.eval_batch_size, device=device),
                                     dev_set.labels, names)
    result = {
        **metrics, **count_parameters(best), "student": description, "ce_only": ce_only,
        "w_kd": w_kd, "w_ce": w_ce, "temperature": cfg.temperature, "augment": cfg.augment,
        "online": cfg.online, "train_rows": len(train_set), "labelled_rows": len(data.train),
        "train_time_s": round(summary["train_seconds"], 2), "wall_time_s": round(wall, 2),
        "train_samples_per_s": round(summary["samples_seen"] / max(summary["train_seconds"], 1e-9), 2),
        "best_step": summary["best_step"], "total_steps": summary["total_steps"],
        "stopped_early": summary["stopped_early"], "world_size": summary["world_size"], "device": str(device),
        "history": summary["history"],
    }
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    shutil.rmtree(out / "checkpoint", ignore_errors=True)  # complete: the resume state is no longer needed
    print(f"{out.name} done: dev accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
          f"{result['train_samples_per_s']:.1f} train samples/s -> {out}")
    return result


def parse_args(argv: list[str]) -> tuple[StudentConfig, Path]:
    parser = argparse.ArgumentParser(prog="python -m distill distill", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/demo", help="the run directory holding teacher/")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--data", help="must match the teacher's data (the cache is checked)")
    args, overrides = parser.parse_known_args(argv)
    if args.data:
        overrides.append(f"--data={args.data}")
    cfg = apply_overrides(PRESETS[args.preset], overrides)
    given = {o[2:].split("=", 1)[0].replace("-", "_") for o in overrides}
    run_dir = Path(args.run_dir)
    teacher_dir = Path(cfg.teacher_dir) if cfg.teacher_dir else run_dir / "teacher"
    return align_data_settings(cfg, teacher_config(teacher_dir), given), run_dir


def main(argv: list[str]) -> int:
    cfg, run_dir = parse_args(argv)
    teacher_dir = Path(cfg.teacher_dir) if cfg.teacher_dir else run_dir / "teacher"
    train_student(cfg, teacher_dir=teacher_dir, out=run_dir / "student", ce_only=False)
    if cfg.baseline:
        train_student(cfg, teacher_dir=teacher_dir, out=run_dir / "student_ce", ce_only=True)
    if torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return 0
    measure_inference(run_dir, cfg)
    from distill.report import write_report

    print(f"report: {write_report(run_dir)}")
    return 0


def measure_inference(run_dir: Path, cfg: StudentConfig) -> dict:
    """CPU inference samples/s of teacher, student and CE-only student on the dev split, measured
    back to back in one process (same machine state), into <run-dir>/inference.json."""
    from transformers import AutoTokenizer

    # only the dev split is used here; the subset seed does not matter
    data = load_dataset(cfg.data_spec(subset_seed=0))
    rates = {}
    for name in ("teacher", "student", "student_ce"):
        directory = run_dir / name
        if not (directory / "metrics.json").exists():
            continue
        model = load_classifier(str(directory), id2label=data.label_map.id2label).eval()
        max_length = load_config(TeacherConfig if name == "teacher" else StudentConfig,
                                 directory / "train_config.json").max_length
        dev = encode(AutoTokenizer.from_pretrained(directory), data.dev, data.label_map.encode(data.dev), max_length)
        rates[name] = round(inference_rate(model, dev, device=torch.device("cpu")), 1)
    result = {"cpu_inference_samples_per_s": rates, "batch_size": 32, "threads": torch.get_num_threads(),
              "rows": len(data.dev)}
    atomic_write_text(run_dir / "inference.json", json.dumps(result, indent=2) + "\n")
    print("CPU inference on dev (samples/s, batch 32): " + ", ".join(f"{k} {v}" for k, v in rates.items()))
    return result
