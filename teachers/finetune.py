"""The teacher stage: fine-tune a classifier, keep the best dev checkpoint, cache its logits.

    python -m distill teacher --data ../shared/data/sst2 --run-dir runs/demo --preset quick [--key=value ...]

Writes ``<run-dir>/teacher/``: the HF model and tokenizer, ``train_config.json``,
``metrics.json``, and ``logits/`` (the logit cache of the training split and of any unlabeled
files given).
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
import torch.nn.functional as F

from distill.cache import fingerprint_parts, write_logit_cache
from distill.config import apply_overrides, atomic_write_text
from distill.data import load_dataset, read_unlabeled
from distill.losses import IGNORE_INDEX
from distill.metrics import classification_metrics
from distill.modeling import (
    PACKAGED,
    apply_strategy,
    count_parameters,
    load_classifier,
    merge_for_saving,
    resolve_model_name,
)
from distill.trainer import TrainConfig, encode, predict_logits, save_model_dir, setup_distributed, train


@dataclass
class TeacherConfig(TrainConfig):
    base_model: str = PACKAGED  # "packaged" (all-MiniLM-L6-v2 from PyPI), a model folder, or a hub name
    strategy: str = "full"  # full | top-n | frozen | lora
    top_n: int = 2  # encoder layers that train under strategy=top-n
    lora_r: int = 8  # LoRA rank
    lora_alpha: int = 16  # LoRA scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.1  # dropout on the LoRA branch
    unlabeled: list[str] = field(default_factory=list)  # extra text files to score for augmentation
    unlabeled_text_column: str = "sentence"  # text column of those files
    cache_dtype: str = "float32"  # float32 | float16 storage of the cached logits
    cache_chunk_rows: int = 4096  # rows per resumable chunk of the cache


# The presets. quick: sized for a 2-core CPU (about 5 minutes, measured in docs/RESULTS.md);
# full: the whole training split for several epochs, meant for a GPU.
PRESETS = {
    "quick": TeacherConfig(max_train_rows=8000, max_length=64, epochs=2, batch_size=32, lr=1e-4,
                           evals_per_epoch=2, patience=2),
    "full": TeacherConfig(max_train_rows=None, max_length=128, epochs=3, batch_size=32, lr=5e-5,
                          evals_per_epoch=4, patience=4, save_every_steps=500),
}


def stage_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "teacher"


def run(cfg: TeacherConfig, run_dir: Path) -> dict:
    """Fine-tune, save the best model, write the logit caches; returns metrics.json's content."""
    from transformers import AutoTokenizer

    out = stage_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.data_spec(subset_seed=cfg.seed))
    unlabeled = {Path(f).stem: read_unlabeled(f, cfg.unlabeled_text_column) for f in cfg.unlabeled}
    names = data.label_map.names
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name(cfg.base_model))
    model = load_classifier(cfg.base_model, id2label=data.label_map.id2label, dropout=cfg.dropout)
    model = apply_strategy(model, strategy=cfg.strategy, top_n=cfg.top_n, lora_r=cfg.lora_r,
                           lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout).to(device)
    params = count_parameters(model)
    print(f"teacher: {cfg.base_model} | strategy {cfg.strategy} | {params['parameters']:,} parameters, "
          f"{params['trainable_parameters']:,} trainable | {len(data.train)} train rows, {len(data.dev)} dev | {device}")

    train_set = encode(tokenizer, data.train, data.label_map.encode(data.train), cfg.max_length)
    dev_set = encode(tokenizer, data.dev, data.label_map.encode(data.dev), cfg.max_length)

    def loss_fn(logits, rows, batch):
        labels = torch.as_tensor(train_set.labels[rows], device=logits.device)
        ce = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        return ce, {"ce": ce.item()}

    def save_best(trained, directory):
        save_model_dir(merge_for_saving(_copy_for_merge(trained, cfg.strategy)), tokenizer, directory, config=cfg,
                       extra_files={})

    start = time.perf_counter()
    summary = train(model, cfg=cfg, train_set=train_set, dev_set=dev_set, label_names=names,
                    loss_fn=loss_fn, out_dir=out, save_best=save_best)
    wall = time.perf_counter() - start
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return {}

    # Score with the best checkpoint as saved (the exact weights the fingerprint hashes).
    best = load_classifier(str(out), id2label=data.label_map.id2label).to(device)
    dev_logits = predict_logits(best, dev_set, batch_size=cfg.eval_batch_size, device=device, amp=cfg.amp)
    metrics = classification_metrics(dev_logits, dev_set.labels, names)
    cache_dir = out / "logits"
    cache_report = {}
    for name, split in {"train": data.train, **unlabeled}.items():
        labels = data.label_map.encode(split) if split.labels is not None else np.full(len(split), IGNORE_INDEX)
        encoded = encode(tokenizer, split, labels, cfg.max_length)
        parts = fingerprint_parts(teacher_dir=out, max_length=cfg.max_length,
                                  data_files=data.files if name == "train" else [split.source], split=split)
        t0 = time.perf_counter()
        manifest = write_logit_cache(
            lambda a, b, enc=encoded: predict_logits(best, enc.slice(a, b), batch_size=cfg.eval_batch_size,
                                                     device=device, amp=cfg.amp),
            directory=cache_dir, name=name, split=split, num_labels=len(names), label_names=names,
            parts=parts, dtype=cfg.cache_dtype, chunk_rows=cfg.cache_chunk_rows,
        )
        info = json.loads(manifest.read_text())
        cache_report[name] = {"rows": info["rows"], "bytes": info["file_bytes"], "dtype": info["dtype"],
                              "seconds": round(time.perf_counter() - t0, 2)}
        print(f"cache {name}: {info['rows']} rows, {info['file_bytes'] / 1e6:.2f} MB {info['dtype']} "
              f"in {cache_report[name]['seconds']:.1f}s -> {cache_dir / (name + '.npy')}")

    result = {
        **metrics, **count_parameters(best), "trainable_parameters": params["trainable_parameters"],
        "strategy": cfg.strategy, "base_model": cfg.base_model,
        "train_rows": len(data.train), "train_time_s": round(summary["train_seconds"], 2),
        "wall_time_s": round(wall, 2),
        "train_samples_per_s": round(summary["samples_seen"] / max(summary["train_seconds"], 1e-9), 2),
        "best_step": summary["best_step"], "total_steps": summary["total_steps"],
        "stopped_early": summary["stopped_early"], "device": str(device), "cache": cache_report,
        "history": summary["history"],
    }
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    shutil.rmtree(out / "checkpoint")  # the stage is complete: the resume state is no longer needed
    print(f"teacher done: dev accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
          f"train {result['train_time_s']:.0f}s at {result['train_samples_per_s']:.1f} samples/s -> {out}")
    return result


def _copy_for_merge(model, strategy: str):
    # merging LoRA rewrites the weights in place; merge a copy so training can go on
    if strategy != "lora":
        return model
    import copy

    return copy.deepcopy(model)


def parse_args(argv: list[str]) -> tuple[TeacherConfig, Path]:
    parser = argparse.ArgumentParser(prog="python -m distill teacher", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="dataset directory (train + dev) or hub name")
    parser.add_argument("--run-dir", default="runs/demo", help="output directory of the run")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    args, overrides = parser.parse_known_args(argv)
    cfg = PRESETS[args.preset]
    if args.data:
        cfg = dataclasses.replace(cfg, data=args.data)
    return apply_overrides(cfg, overrides), Path(args.run_dir)


def main(argv: list[str]) -> int:
    cfg, run_dir = parse_args(argv)
    run(cfg, run_dir)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
