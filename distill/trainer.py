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

import errno
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from distill import layout
from distill.artifacts import ModelInfo, write_model_info
from distill.config import ConfigError, atomic_write_text, save_config
from distill.data import Split
from distill.disk import DiskFullError, require_free, tensor_bytes
from distill.errors import PipelineError
from distill.metrics import classification_metrics
from distill.tokens import Encoded, LongText


@dataclass
class TrainConfig:
    """What the teacher and student stages share: optimisation, evaluation and runtime."""

    max_length: int = 128  # tokens per model input (special tokens included)
    # texts longer than max_length (distill/tokens.py): truncate (keep the head) | head_tail | chunks
    long_text: str = "truncate"
    head_tokens: int | None = None  # head_tail: text tokens kept from the start (None: a quarter; Sun et al.: 128 of 510)
    chunk_overlap: int = 0  # chunks: text tokens each chunk shares with the one before
    # optimisation
    epochs: int = 3  # passes over the training rows
    max_steps: int | None = None  # stop after this many steps (a time box; the lr schedule still spans the epochs)
    batch_size: int = 32  # global batch (split across ranks under torchrun)
    lr: float = 5e-5  # peak learning rate
    weight_decay: float = 0.01  # AdamW weight decay (not on biases and LayerNorm)
    warmup_ratio: float = 0.1  # fraction of steps with linear warm-up; then linear decay to 0
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    bucket_batches: int = 50  # batches per length-sorted bucket (less padding); 1: plain shuffle
    dropout: float | None = None  # override the model's dropout probabilities (None: keep)
    # evaluation, early stopping, checkpoints
    evals_per_epoch: int = 1  # evaluations (checkpoint choices) per epoch
    evals: int | None = None  # evaluations over the whole run instead, evenly spaced, the last at its end
    #                           (None: evals_per_epoch in every epoch; a run of many short epochs needs few)
    patience: int = 2  # stop after this many evaluations without a better accuracy (0: never)
    holdout_rows: int = 0  # choose checkpoints on this many training rows held back (seeded); 0: on dev (flatters dev)
    eval_batch_size: int = 128  # batch size for dev evaluation and scoring
    save_every_steps: int = 200  # resume checkpoint cadence in steps (also at every eval)
    # runtime
    seed: int = 0  # seeds head init, dropout and data order; a CPU run repeats exactly
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    progress: bool = True  # show a progress bar
    restart: bool = False  # delete the resume checkpoint (if any) and train from step 0 (false: resume it)

    # Settings a resume may change: they do not change the run (display, where it runs, how often it
    # saves, a time box). Any other difference from the checkpoint's settings refuses the resume.
    resume_neutral: ClassVar[tuple[str, ...]] = ("progress", "device", "eval_batch_size", "max_steps",
                                                 "save_every_steps", "restart")

    def long_text_settings(self) -> LongText:
        return LongText(mode=self.long_text, head_tokens=self.head_tokens, chunk_overlap=self.chunk_overlap)


# ----------------------------------------------------------------------------- data


def holdout_indices(n: int, rows: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training row indices kept, indices held back) of ``n`` rows: ``rows`` held back, drawn
    with ``seed`` (the data seed, so every run on this data holds back the same rows)."""
    if rows <= 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    if rows >= n - 1:
        raise ConfigError(f"--holdout_rows={rows}: the training split has {n} rows; hold back at most {max(n - 2, 0)}")
    held = np.sort(np.random.default_rng([seed, 1]).choice(n, size=rows, replace=False))
    return np.setdiff1d(np.arange(n), held), held


def holdout_split(train: Split, rows: int, *, seed: int, dev: Split) -> tuple[Split, Split, str]:
    """(rows to train on, rows to choose checkpoints on, their name). ``rows`` > 0 holds back that
    many training rows (``holdout_indices``), so dev stays unseen by every choice; 0 chooses on
    dev itself, which flatters the dev figures a little."""
    if rows <= 0:
        return train, dev, "dev"
    kept, held = holdout_indices(len(train), rows, seed=seed)
    return train.subset(kept), train.subset(held), "holdout"


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
    """(D, C) float32 logits, one per document in dataset order: a row's own logits, or under
    long_text=chunks (``encoded.groups`` set) the mean of its chunk rows'. Rows run sorted by length
    (less padding)."""
    was_training = model.training
    model.eval()
    order = np.argsort(encoded.lengths, kind="stable")
    out = None
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = model(**encoded.batch(rows, device)).logits.float().cpu().numpy()
        if out is None:
            out = np.empty((len(encoded), logits.shape[1]), dtype=np.float32)
        out[rows] = logits
    model.train(was_training)
    return out if out is None else encoded.document_logits(out)


def classification_evaluate(eval_set: Encoded, label_names: list[str], *, batch_size: int, device: torch.device,
                            amp: bool = False) -> Evaluate:
    """The sentence-classification ``evaluate``: accuracy (the score) and macro-F1 over the
    documents of ``eval_set``."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        logits = predict_logits(model, eval_set, batch_size=batch_size, device=device, amp=amp)  # (D, C)
        metrics = classification_metrics(logits, eval_set.document_labels, label_names)
        return {"score": metrics["accuracy"], "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}

    return evaluate


# ----------------------------------------------------------------------------- checkpoints


def atomic_save_dir(target: Path, write: Callable[[Path], None], *, needed: int = 0) -> None:
    """Write a directory atomically: fill ``<target>.tmp``, then swap it in by rename. A crash
    leaves either the old directory or the new one, never a half-written one. ``needed``: the bytes
    it will take, checked free first (the old copy stays until the new one is complete). The fixed
    temp name is safe under the stage's lock (distill/lock.py): one left by a killed writer is removed."""
    tmp = target.with_name(target.name + ".tmp")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        require_free(tmp, needed, what=f"{target.name} (weights and optimizer state)")
        write(tmp)
    except OSError as err:  # the old copy is untouched; the half-written one goes
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno == errno.ENOSPC and not isinstance(err, DiskFullError):
            raise DiskFullError(f"{tmp}: the disk filled while writing it (about {needed:,} bytes); the previous "
                                f"{target.name} is kept; free some space and rerun") from err
        raise
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


LossFn = Callable[[object, np.ndarray, dict], tuple[torch.Tensor, dict[str, float]]]
Evaluate = Callable[[nn.Module], dict[str, float]]
# evaluate(model) -> figures on the evaluation rows: "score" (higher is better) chooses checkpoints;
# the others are logged beside it, e.g. {"score": acc, "accuracy": acc, "macro_f1": f1}
# loss_fn(model outputs (.logits (B, C), ...), row indices (B,), batch) -> (scalar loss, {"ce": .., "kd": ..})


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    best_score: float = -1.0  # best evaluation score so far (what checkpoints are chosen on)
    best_step: int = -1  # step at which it was reached
    evals_since_best: int = 0  # for early stopping
    stopped_early: bool = False
    train_seconds: float = 0.0  # wall time spent in training steps (not eval), across resumes
    samples_seen: int = 0  # training examples processed (global), across resumes

    def record(self, score: float, *, patience: int) -> bool:
        """An evaluation at ``self.step``: True when it beats the best so far (its checkpoint is the
        one to keep); otherwise one more without gain, and early stop after ``patience`` (0: never)."""
        if score > self.best_score:
            self.best_score, self.best_step, self.evals_since_best = score, self.step, 0
            return True
        self.evals_since_best += 1
        self.stopped_early = 0 < patience <= self.evals_since_best
        return False


def train(
    model: nn.Module,
    *,
    cfg: TrainConfig,
    train_set: Encoded,
    evaluate: Evaluate,
    eval_name: str,
    loss_fn: LossFn,
    out_dir: Path,
    save_best: Callable[[nn.Module, Path], None],
) -> dict:
    """Train ``model`` and keep the checkpoint with the best ``evaluate(model)["score"]`` (on dev,
    or on rows held back from training: ``eval_name`` says which) via ``save_best(model,
    directory)``. Resumes from ``out_dir/checkpoint`` when it exists. Returns the loop's summary."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    check_loop_settings(cfg, rows=len(train_set), world=world)
    device = next(model.parameters()).device
    amp = cfg.amp and device.type == "cuda"
    steps_per_epoch = len(train_set) // cfg.batch_size
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = max(1, int(cfg.warmup_ratio * total_steps))
    eval_steps = evaluation_steps(cfg, steps_per_epoch=steps_per_epoch)
    optimizer = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)

    ckpt_dir = out_dir / "checkpoint"
    state, history = resume(ckpt_dir, cfg, model, optimizer, rank=rank, total_steps=total_steps)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)

    def checkpoint() -> None:
        if rank == 0:
            atomic_save_dir(ckpt_dir, lambda d: _write_checkpoint(d, unwrap(model), optimizer, state, history, cfg),
                            needed=tensor_bytes(unwrap(model).state_dict(), optimizer.state_dict()["state"]))

    bar = tqdm(total=total_steps, initial=state.step, disable=not cfg.progress or rank != 0,
               dynamic_ncols=True, mininterval=1.0, desc=out_dir.name)
    model.train()
    lengths = np.asarray(train_set.lengths)  # (R,)
    batches: list[np.ndarray] = []
    window = LogWindow()
    stop_at = total_steps if cfg.max_steps is None else min(total_steps, cfg.max_steps)
    while state.step < stop_at and not state.stopped_early:
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
            outputs = model(**batch)  # .logits (B, C)
        loss, parts = loss_fn(outputs, rows, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the global gradient norm, clipped when grad_clip > 0 (max_norm inf: measured, left as it is)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        step_figures = {"loss": loss.item(), **parts, "grad norm": grad_norm.item()}
        if not all(math.isfinite(v) for v in step_figures.values()):  # stop before the update: no NaN weights
            raise NonFiniteError(non_finite_message(step_figures, step=state.step + 1, total_steps=total_steps,
                                                    ckpt_dir=ckpt_dir))
        optimizer.step()
        state.step += 1
        dt = time.perf_counter() - t0
        state.train_seconds += dt
        state.samples_seen += cfg.batch_size
        window.add(step_figures["loss"], parts, samples=cfg.batch_size, seconds=dt)
        bar.update(1)
        bar.set_postfix(loss=f"{step_figures['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)

        if state.step in eval_steps or (state.step == stop_at and stop_at < total_steps):
            figures = evaluate(model)
            # the last evaluation stops nothing (the schedule is over): patience 0, so that a run which
            # ended without gain there is not reported as stopped early
            improved = state.record(figures["score"], patience=cfg.patience if state.step < stop_at else 0)
            if improved and rank == 0:
                save_best(unwrap(model), out_dir)
            row = {"step": state.step, "epoch": round(state.step / steps_per_epoch, 3), **window.means(), "lr": lr,
                   "eval_set": eval_name, "eval": {k: v for k, v in figures.items() if k != "score"}, "best": improved}
            history.append(row)
            if rank == 0:
                tqdm.write(format_log_line(row, total_steps, early_stop=state.stopped_early))
            window = LogWindow()
            checkpoint()
        elif cfg.save_every_steps and state.step % cfg.save_every_steps == 0:
            checkpoint()
    bar.close()
    return {**asdict(state), "total_steps": total_steps, "history": history, "world_size": world}


LOSS_PARTS = ("ce", "kd", "hidden", "attn")  # the loss terms a stage may report, in log order


class NonFiniteError(FloatingPointError, PipelineError):
    """A NaN or infinite loss, loss term or gradient norm: training stopped before that update."""


def check_loop_settings(cfg: TrainConfig, *, rows: int, world: int) -> None:
    """Raise ``ConfigError`` for settings the loop's batch arithmetic cannot run with."""
    if cfg.batch_size < 1 or cfg.epochs < 1:
        raise ConfigError(f"--batch_size={cfg.batch_size}, --epochs={cfg.epochs}: both must be 1 or more")
    if cfg.evals_per_epoch < 1 or (cfg.evals is not None and cfg.evals < 1):
        raise ConfigError(f"--evals_per_epoch={cfg.evals_per_epoch}, --evals={cfg.evals}: evaluations must be 1 or more")
    if cfg.batch_size % world:
        raise ConfigError(f"--batch_size={cfg.batch_size}: does not split evenly over {world} processes")
    if rows < cfg.batch_size:
        raise ConfigError(f"--batch_size={cfg.batch_size}: there are only {rows} training rows, fewer than one "
                          f"batch; lower --batch_size to {rows} or less, or give more rows")


def evaluation_steps(cfg: TrainConfig, *, steps_per_epoch: int) -> set[int]:
    """The steps after which the loop evaluates (and may keep a checkpoint): ``evals`` times over the
    whole run when set, else ``evals_per_epoch`` times an epoch; evenly spaced, the last at the end."""
    if cfg.evals is not None:
        total = steps_per_epoch * cfg.epochs
        return {round(k * total / cfg.evals) for k in range(1, cfg.evals + 1)}
    return {epoch * steps_per_epoch + round(k * steps_per_epoch / cfg.evals_per_epoch)
            for epoch in range(cfg.epochs) for k in range(1, cfg.evals_per_epoch + 1)}


def planned_evals(cfg: dict) -> int:
    """How many evaluations ``evaluation_steps`` plans for a run's settings (a train_config.json, or
    ``dataclasses.asdict`` of a TrainConfig): kept beside it so that the two cannot drift apart."""
    return cfg.get("evals") or cfg.get("epochs", 1) * cfg.get("evals_per_epoch", 1)


def non_finite_message(figures: dict[str, float], *, step: int, total_steps: int, ckpt_dir: Path) -> str:
    """The one line that says which figures of ``step`` were not finite and what was kept."""
    bad = ", ".join(f"{k} {v}" for k, v in figures.items() if not math.isfinite(v))
    kept = (f"the last checkpoint (step {_checkpoint_step(ckpt_dir)}, {ckpt_dir}) is kept"
            if (ckpt_dir / "state.json").exists() else "no checkpoint had been written yet")
    return (f"step {step}/{total_steps}: not finite: {bad}; training stopped before this update, {kept} "
            "(try a lower --lr, or check what feeds the term named)")


def _checkpoint_step(ckpt_dir: Path) -> int:
    return json.loads((ckpt_dir / "state.json").read_text())["state"]["step"]


def resume(ckpt_dir: Path, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, *, rank: int,
           total_steps: int) -> tuple[LoopState, list[dict]]:
    """The loop state to start from: the checkpoint's when there is one made with the same settings
    (a ``ConfigError`` listing the differences otherwise), a fresh one when there is none, or when
    ``cfg.restart`` (which deletes it: only then)."""
    recover_interrupted_save(ckpt_dir)
    if not (ckpt_dir / "state.json").exists():
        return LoopState(), []
    if cfg.restart:  # the other ranks only skip it (rank 0 may be deleting it as they look)
        if rank == 0:
            step = _checkpoint_step(ckpt_dir)
            shutil.rmtree(ckpt_dir)
            print(f"restart: deleted the checkpoint at step {step}/{total_steps} in {ckpt_dir}; training from step 0")
        return LoopState(), []
    step = _checkpoint_step(ckpt_dir)
    saved = json.loads((ckpt_dir / "state.json").read_text()).get("config")
    if saved is None and rank == 0:
        print(f"{ckpt_dir}: this checkpoint records no settings (an older version wrote it); resuming unchecked")
    now = json.loads(json.dumps(asdict(cfg)))  # as JSON reads it back (lists, not tuples)
    changed = [f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved or {}) | set(now))
               if saved is not None and k not in type(cfg).resume_neutral and saved.get(k) != now.get(k)]
    if changed:
        raise ConfigError(f"{ckpt_dir}: the checkpoint (at step {step}) was made with other settings: "
                          f"{'; '.join(changed)}; resume with the checkpoint's settings, or give --restart=true "
                          "to start over (deletes the checkpoint)")
    state, history = _load_checkpoint(ckpt_dir, model, optimizer)
    if rank == 0:
        print(f"resumed from {ckpt_dir} at step {state.step}/{total_steps}")
    return state, history


@dataclass
class LogWindow:
    """Sums over the steps since the last log line: the loss, each of its terms, rows and seconds."""
    loss: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)  # LOSS_PARTS name -> sum over the steps
    steps: int = 0
    samples: int = 0
    seconds: float = 0.0

    def add(self, loss: float, parts: dict[str, float], *, samples: int, seconds: float) -> None:
        self.loss += loss
        for key, value in parts.items():
            self.parts[key] = self.parts.get(key, 0.0) + value
        self.steps += 1
        self.samples += samples
        self.seconds += seconds

    def means(self) -> dict[str, float]:
        """The log row's loss figures: the mean loss and terms per step, and rows per second."""
        n = max(self.steps, 1)
        return {"loss": self.loss / n, **{key: value / n for key, value in self.parts.items()},
                "samples_per_s": self.samples / max(self.seconds, 1e-9)}


def format_log_line(row: dict, total_steps: int, *, early_stop: bool) -> str:
    """One line per eval: step, epoch, the loss and each of its terms, lr, speed, eval metrics."""
    parts = [f"step {row['step']:>5}/{total_steps}", f"epoch {row['epoch']:.2f}", f"loss {row['loss']:.4f}"]
    parts += [f"{key} {row[key]:.4f}" for key in LOSS_PARTS if key in row]
    parts += [f"lr {row['lr']:.2e}", f"{row['samples_per_s']:.1f} samples/s",
              f"{row['eval_set']} " + " ".join(f"{k} {v:.4f}" for k, v in row["eval"].items())]
    parts += ["best"] * row["best"] + ["early stop"] * early_stop
    return " | ".join(parts)


def _write_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                      state: LoopState, history: list[dict], cfg: TrainConfig) -> None:
    from safetensors.torch import save_file

    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(_untie(weights), directory / "model.safetensors")
    # optimizer and RNG hold only tensors and numbers: saved with torch.save, read back with
    # weights_only=True, which refuses anything but tensors and primitive containers
    torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
               directory / "optimizer.pt")
    # the resolved settings: a resume compares them with its own (``resume``)
    atomic_write_text(directory / "state.json", json.dumps({"state": asdict(state), "history": history,
                                                            "config": asdict(cfg)}, indent=1))


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


def save_model_dir(model: nn.Module, tokenizer, directory: Path, *, config: object, info: ModelInfo) -> None:
    """An HF ``save_pretrained`` model + tokenizer + the config used (train_config.json) + what
    later stages read (distill.json), written into ``directory`` (the stage's output folder keeps
    other files): each file is complete before it is renamed into place."""
    model_dir = directory / "model.tmp"  # fixed name: the stage's lock makes this process its only writer
    shutil.rmtree(model_dir, ignore_errors=True)  # one a killed writer left
    model_dir.mkdir(parents=True)
    require_free(model_dir, tensor_bytes(model.state_dict()), what="the model's weights")
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    save_config(config, model_dir / layout.TRAIN_CONFIG_FILE)
    write_model_info(model_dir, info)
    for file in model_dir.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(file, directory / file.name)
    model_dir.rmdir()


def loop_figures(summary: dict, wall: float) -> dict:
    """The figures of a finished ``train`` (its returned summary) that a stage's metrics.json
    reports: train and wall time, training speed, the best step, early stop, peak memory, history."""
    return {"train_time_s": round(summary["train_seconds"], 2), "wall_time_s": round(wall, 2),
            "train_samples_per_s": round(summary["samples_seen"] / max(summary["train_seconds"], 1e-9), 2),
            "best_step": summary["best_step"], "total_steps": summary["total_steps"],
            "stopped_early": summary["stopped_early"], "peak_rss_mb": peak_rss_mb(), "history": summary["history"]}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ru_maxrss in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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
