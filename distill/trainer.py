"""The training loop shared by the teacher and student stages.

One visible loop (``train``): lr from a pure ``get_lr(step)``, eval + checkpoint, forward, loss,
backward, clip, step, one log line per eval. The stage supplies ``loss_fn`` — cross-entropy for
the teacher, the KD + CE mix for the student — and everything else is the same.

Determinism and resume: the data order of epoch e is a permutation drawn from ``seed + e``, so
a resumed run regenerates it and skips the batches already done; the checkpoint carries the
weights, the optimizer, the torch RNG state and the loop counters. A resumed run ends with the
same weights as an uninterrupted one (CPU; tested).

Data parallel: under ``torchrun`` each rank takes an equal share of every global batch and DDP
averages gradients, so the update equals a single process's on the same global batch. Every
rank evaluates (dev sets are small) so they take the same early-stopping decision; only rank 0
writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from distill.config import atomic_write_text, save_config
from distill.data import DataSpec, Split
from distill.metrics import classification_metrics


@dataclass
class TrainConfig:
    # data
    data: str = "../shared/data/sst2"  # dataset directory (train + dev splits) or hub name
    text_column: str = "text"  # column holding the text
    text_pair_column: str | None = None  # second text column for sentence-pair tasks
    label_column: str = "label"  # column holding the label
    max_train_rows: int | None = None  # random subset of the training split (None: all)
    max_length: int = 128  # tokens per example after truncation
    # optimisation
    epochs: int = 3  # passes over the training rows
    batch_size: int = 32  # global batch (split across ranks under torchrun)
    lr: float = 5e-5  # peak learning rate
    weight_decay: float = 0.01  # AdamW weight decay (not on biases and LayerNorm)
    warmup_ratio: float = 0.1  # fraction of steps with linear warm-up; then linear decay to 0
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    bucket_batches: int = 50  # batches per length-sorted bucket (less padding); 1: plain shuffle
    dropout: float | None = None  # override the model's dropout probabilities (None: keep)
    # evaluation, early stopping, checkpoints
    evals_per_epoch: int = 1  # dev evaluations per epoch
    patience: int = 2  # stop after this many evaluations without a better dev accuracy (0: never)
    eval_batch_size: int = 128  # batch size for dev evaluation and scoring
    save_every_steps: int = 200  # resume checkpoint cadence in steps (also at every eval)
    # runtime
    seed: int = 0  # seeds head init, dropout and data order; a CPU run repeats exactly
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    progress: bool = True  # show a progress bar

    def data_spec(self, *, subset_seed: int) -> DataSpec:
        """Where the rows come from; ``subset_seed`` picks the ``max_train_rows`` subset (the
        teacher's seed, so every stage sees the rows the teacher cached)."""
        return DataSpec(path=self.data, text_column=self.text_column, text_pair_column=self.text_pair_column,
                        label_column=self.label_column, max_train_rows=self.max_train_rows, seed=subset_seed)


# ----------------------------------------------------------------------------- data


@dataclass
class Encoded:
    """A tokenised split. Token lists are unpadded; a batch is padded to its own longest row."""

    input_ids: list[list[int]]  # (R, variable)
    token_type_ids: list[list[int]] | None  # (R, variable) or None when the model has none
    labels: np.ndarray  # (R,) int64, ``IGNORE_INDEX`` for unlabeled rows
    pad_token_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def slice(self, start: int, stop: int) -> Encoded:
        """Rows start:stop as their own ``Encoded``."""
        return Encoded(input_ids=self.input_ids[start:stop],
                       token_type_ids=None if self.token_type_ids is None else self.token_type_ids[start:stop],
                       labels=self.labels[start:stop], pad_token_id=self.pad_token_id)

    def batch(self, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """rows: (B,) indices -> input_ids, attention_mask (, token_type_ids): (B, L_max)."""
        seqs = [self.input_ids[i] for i in rows]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for j, seq in enumerate(seqs):
            ids[j, : len(seq)] = torch.tensor(seq)
            mask[j, : len(seq)] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        if self.token_type_ids is not None:
            types = torch.zeros((len(seqs), width), dtype=torch.long)
            for j, i in enumerate(rows):
                types[j, : len(self.token_type_ids[i])] = torch.tensor(self.token_type_ids[i])
            out["token_type_ids"] = types
        return {k: v.to(device) for k, v in out.items()}


def encode(tokenizer, split: Split, labels: np.ndarray, max_length: int) -> Encoded:
    """Tokenise a split without padding. labels: (R,) int64."""
    enc = tokenizer(split.texts, split.text_pairs, truncation=True, max_length=max_length)
    types = enc.get("token_type_ids")
    return Encoded(
        input_ids=enc["input_ids"], token_type_ids=types, labels=labels,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    )


def epoch_batches(lengths: np.ndarray, *, epoch: int, seed: int, batch_size: int, bucket_batches: int = 1,
                  rank: int = 0, world: int = 1) -> list[np.ndarray]:
    """This rank's row indices for each step of ``epoch``. lengths: (R,) tokens per row.

    A permutation seeded by ``seed`` and ``epoch`` is cut into buckets of ``bucket_batches``
    global batches; each bucket is sorted by length before it is cut into batches (less padding:
    rows of similar length share a batch), and the batch order is shuffled again. The last
    incomplete global batch is dropped; each global batch is strided across ranks."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).numpy()
    steps = len(lengths) // batch_size
    order = order[: steps * batch_size]
    bucket = batch_size * max(1, bucket_batches)
    if bucket_batches > 1:
        order = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                                for chunk in np.split(order, range(bucket, len(order), bucket))])
    batches = order.reshape(steps, batch_size)
    if bucket_batches > 1:
        batches = batches[torch.randperm(steps, generator=generator).numpy()]
    return [batch[rank::world] for batch in batches]


# ----------------------------------------------------------------------------- schedule


def get_lr(step: int, *, lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then linear decay to 0 at
    ``total_steps``. Pure: the schedule needs no state to resume."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    remaining = max(total_steps - warmup_steps, 1)
    return lr * max(0.0, (total_steps - step) / remaining)


def make_optimizer(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_logits(model: nn.Module, encoded: Encoded, *, batch_size: int, device: torch.device,
                   amp: bool = False) -> np.ndarray:
    """(R, C) float32 logits, rows in dataset order. Rows run sorted by length (less padding)."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(s) for s in encoded.input_ids], kind="stable")
    out = None
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = model(**encoded.batch(rows, device)).logits.float().cpu().numpy()
        if out is None:
            out = np.empty((len(encoded), logits.shape[1]), dtype=np.float32)
        out[rows] = logits
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------- checkpoints


def atomic_save_dir(target: Path, write: Callable[[Path], None]) -> None:
    """Write a directory atomically: fill ``<target>.tmp``, then swap it in by rename. A crash
    leaves either the old directory or the new one, never a half-written one."""
    tmp = target.with_name(target.name + ".tmp")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    for file in tmp.iterdir():  # flush file contents before the rename makes them visible
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_interrupted_save(target: Path) -> None:
    """If a crash hit between the two renames of ``atomic_save_dir``, put the old copy back."""
    old = target.with_name(target.name + ".old")
    if not target.exists() and old.exists():
        os.replace(old, target)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ----------------------------------------------------------------------------- the loop


LossFn = Callable[[torch.Tensor, np.ndarray, dict], tuple[torch.Tensor, dict[str, float]]]
# loss_fn(student logits (B, C), row indices (B,), batch) -> (scalar loss, {"ce": .., "kd": ..})


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    best_accuracy: float = -1.0  # best dev accuracy so far
    best_step: int = -1  # step at which it was reached
    evals_since_best: int = 0  # for early stopping
    stopped_early: bool = False
    train_seconds: float = 0.0  # wall time spent in training steps (not eval), across resumes
    samples_seen: int = 0  # training examples processed (global), across resumes


def train(
    model: nn.Module,
    *,
    cfg: TrainConfig,
    train_set: Encoded,
    dev_set: Encoded,
    label_names: list[str],
    loss_fn: LossFn,
    out_dir: Path,
    save_best: Callable[[nn.Module, Path], None],
) -> dict:
    """Train ``model`` and keep the best dev checkpoint via ``save_best(model, directory)``.
    Resumes from ``out_dir/checkpoint`` when it exists. Returns the loop's summary."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} does not split evenly over {world} processes")
    device = next(model.parameters()).device
    amp = cfg.amp and device.type == "cuda"
    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training rows is fewer than one batch of {cfg.batch_size}")
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = max(1, int(cfg.warmup_ratio * total_steps))
    # evaluate evals_per_epoch times an epoch, evenly, the last at the epoch's end
    eval_steps = {epoch * steps_per_epoch + round(k * steps_per_epoch / cfg.evals_per_epoch)
                  for epoch in range(cfg.epochs) for k in range(1, cfg.evals_per_epoch + 1)}
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)

    ckpt_dir = out_dir / "checkpoint"
    recover_interrupted_save(ckpt_dir)
    state, history = LoopState(), []
    if (ckpt_dir / "state.json").exists():
        state, history = _load_checkpoint(ckpt_dir, model, optimizer)
        if rank == 0:
            print(f"resumed from {ckpt_dir} at step {state.step}/{total_steps}")
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)

    def checkpoint() -> None:
        if rank == 0:
            atomic_save_dir(ckpt_dir, lambda d: _write_checkpoint(d, unwrap(model), optimizer, state, history))

    bar = tqdm(total=total_steps, initial=state.step, disable=not cfg.progress or rank != 0,
               dynamic_ncols=True, mininterval=1.0, desc=out_dir.name)
    model.train()
    lengths = np.array([len(ids) for ids in train_set.input_ids])  # (R,)
    batches: list[np.ndarray] = []
    window = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "n": 0, "samples": 0, "seconds": 0.0}
    while state.step < total_steps and not state.stopped_early:
        epoch, step_in_epoch = divmod(state.step, steps_per_epoch)
        if step_in_epoch == 0 or not batches:  # the epoch's order: regenerated, never stored
            batches = epoch_batches(lengths, epoch=epoch, seed=cfg.seed, batch_size=cfg.batch_size,
                                    bucket_batches=cfg.bucket_batches, rank=rank, world=world)
        rows = batches[step_in_epoch]
        t0 = time.perf_counter()
        lr = get_lr(state.step, lr=cfg.lr, warmup_steps=warmup_steps, total_steps=total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = train_set.batch(rows, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(**batch).logits  # (B, C)
        loss, parts = loss_fn(logits.float(), rows, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        state.step += 1
        dt = time.perf_counter() - t0
        state.train_seconds += dt
        state.samples_seen += cfg.batch_size
        window["loss"] += loss.item()
        window["ce"] += parts.get("ce", float("nan"))
        window["kd"] += parts.get("kd", float("nan"))
        window["n"] += 1
        window["samples"] += cfg.batch_size
        window["seconds"] += dt
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", refresh=False)

        if state.step in eval_steps:
            logits_dev = predict_logits(model, dev_set, batch_size=cfg.eval_batch_size, device=device, amp=amp)
            metrics = classification_metrics(logits_dev, dev_set.labels, label_names)
            improved = metrics["accuracy"] > state.best_accuracy
            if improved:
                state.best_accuracy, state.best_step, state.evals_since_best = metrics["accuracy"], state.step, 0
                if rank == 0:
                    save_best(unwrap(model), out_dir)
            else:
                state.evals_since_best += 1
                state.stopped_early = 0 < cfg.patience <= state.evals_since_best
            n = max(window["n"], 1)
            row = {
                "step": state.step, "epoch": round(state.step / steps_per_epoch, 3),
                "loss": window["loss"] / n, "ce": _or_none(window["ce"] / n), "kd": _or_none(window["kd"] / n), "lr": lr,
                "samples_per_s": window["samples"] / max(window["seconds"], 1e-9),
                "dev_accuracy": metrics["accuracy"], "dev_macro_f1": metrics["macro_f1"], "best": improved,
            }
            history.append(row)
            if rank == 0:
                tqdm.write(format_log_line(row, total_steps, early_stop=state.stopped_early))
            window = {k: 0.0 if k != "n" else 0 for k in window}
            checkpoint()
        elif cfg.save_every_steps and state.step % cfg.save_every_steps == 0:
            checkpoint()
    bar.close()
    return {**asdict(state), "total_steps": total_steps, "history": history, "world_size": world}


def format_log_line(row: dict, total_steps: int, *, early_stop: bool) -> str:
    """One line per eval: step, epoch, the loss and its parts, lr, speed, dev metrics."""
    parts = [f"step {row['step']:>5}/{total_steps}", f"epoch {row['epoch']:.2f}", f"loss {row['loss']:.4f}"]
    parts += [f"{key} {row[key]:.4f}" for key in ("ce", "kd") if row[key] is not None]
    parts += [f"lr {row['lr']:.2e}", f"{row['samples_per_s']:.1f} samples/s",
              f"dev acc {row['dev_accuracy']:.4f} f1 {row['dev_macro_f1']:.4f}"]
    parts += ["best"] * row["best"] + ["early stop"] * early_stop
    return " | ".join(parts)


def _or_none(x: float) -> float | None:
    return None if math.isnan(x) else x  # JSON has no NaN: a loss part the stage lacks is null


def _write_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                      state: LoopState, history: list[dict]) -> None:
    from safetensors.torch import save_file

    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(_untie(weights), directory / "model.safetensors")
    # optimizer and RNG hold only tensors and numbers: saved with torch.save, read back with
    # weights_only=True, which refuses anything but tensors and primitive containers
    torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
               directory / "optimizer.pt")
    atomic_write_text(directory / "state.json", json.dumps({"state": asdict(state), "history": history}, indent=1))


def _untie(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied embeddings): store separate copies
    seen: dict[int, str] = {}
    out = {}
    for key, value in weights.items():
        ptr = value.data_ptr()
        out[key] = value.clone() if ptr in seen else value
        seen.setdefault(ptr, key)
    return out


def _load_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer
                     ) -> tuple[LoopState, list[dict]]:
    from safetensors.torch import load_file

    weights = load_file(directory / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if k in dict(model.named_parameters())]:
        raise RuntimeError(f"{directory}: checkpoint does not fit this model "
                           f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    extra = torch.load(directory / "optimizer.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(extra["optimizer"])
    torch.set_rng_state(extra["torch_rng"])
    if extra["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(extra["cuda_rng"])
    saved = json.loads((directory / "state.json").read_text())
    return LoopState(**saved["state"]), saved["history"]


# ----------------------------------------------------------------------------- saving


def save_model_dir(model: nn.Module, tokenizer, directory: Path, *, config: object, extra_files: dict[str, str]
                   ) -> None:
    """An HF ``save_pretrained`` model + tokenizer + the config used (train_config.json),
    written atomically into ``directory`` (the stage's output folder keeps other files)."""
    model_dir = directory / "model.tmp"
    shutil.rmtree(model_dir, ignore_errors=True)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    save_config(config, model_dir / "train_config.json")
    for name, text in extra_files.items():
        atomic_write_text(model_dir / name, text)
    for file in model_dir.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(file, directory / file.name)
    model_dir.rmdir()


def setup_distributed(device_name: str) -> torch.device:
    """Join the process group when started by torchrun (gloo on CPU, NCCL on GPU)."""
    from distill.modeling import pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device
