"""The student stage for a causal LM teacher (distill.json task ``lm``).

    python -m distill distill --run-dir RUN [--key=value ...]      (the task comes from teacher/distill.json)

``students/distill.py`` hands the arguments here when the teacher's task is ``lm``. Two students,
both with the teacher's tokenizer (``--student``):

- ``subset``: ``keep_layers`` of the teacher's blocks, evenly spaced (first and last kept; or
  ``layer_ids``), with its embeddings, final norm and output matrix;
- ``fresh``: the teacher's architecture at a new size (``fresh_layers`` x ``fresh_hidden``, tied
  embeddings), randomly initialised.

The loop is distill/trainer.py's ``train`` (resume from a checkpoint, DDP under torchrun), the
rows are the teacher's training blocks, and the loss is ``distill.lm_loss.lm_kd_loss`` on the
student's last hidden states and output matrix (``distill.lm_model.HiddenStates``): w_kd · T² ·
KL(teacher ‖ student) over the cached sparse targets plus w_ce · CE of the next token, a chunk of
positions at a time (the Triton kernel on CUDA). ``role="student_ce"`` (written beside, unless
``--student_ce=false``) is the control: the same student, blocks, steps and seed, CE only, so
both have seen the same tokens. Checkpoints are chosen on the held-out perplexity of the first
``select_blocks`` held-out blocks (score 1 / perplexity); ``metrics.json`` reports held-out
perplexity, next-token accuracy and top-1 agreement with the teacher on every held-out block, and
``README.md`` is its model card (distill/lm_card.py).
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
import torch.distributed as dist

from distill import layout
from distill.artifacts import ModelInfo, read_model_info
from distill.config import ConfigError, apply_overrides, atomic_write_text
from distill.kd_defaults import IGNORE_INDEX
from distill.lm_cache import TargetCache, TargetSpec, open_targets
from distill.lm_card import write_lm_card
from distill.lm_data import load_lm_data
from distill.lm_loss import DEFAULT_CHUNK, LossWeights, SparseTargets, lm_kd_loss
from distill.lm_model import HiddenStates, student_heldout
from distill.trainer import TrainConfig, loop_figures, save_model_dir, setup_distributed, train
from students.build import evenly_spaced_layers
from students.stage import close_stage


@dataclass
class LMStudentConfig(TrainConfig):
    teacher_dir: str | None = None  # the teacher stage's output (None: <run-dir>/teacher)
    student: str = "fresh"  # fresh (a new narrow model) | subset (evenly spaced teacher blocks)
    keep_layers: int = 6  # subset: teacher blocks kept, evenly spaced
    layer_ids: list[int] = field(default_factory=list)  # subset: explicit block indices (overrides keep_layers)
    fresh_layers: int = 4  # fresh: blocks
    fresh_hidden: int = 128  # fresh: width (the output matrix is V x width)
    fresh_heads: int = 4  # fresh: attention heads
    fresh_kv_heads: int = 2  # fresh: key/value heads (grouped-query attention, as the teacher)
    fresh_intermediate: int | None = None  # fresh: MLP width (None: the teacher's ratio to its width)
    temperature: float = 1.0  # must be the cache's (distill/lm_cache.py: the tail is only known at that T)
    w_kd: float = 0.5  # weight of T² · KL(teacher ‖ student) over the cached support and tail
    w_ce: float = 0.5  # weight of the next-token CE
    position_chunk: int = DEFAULT_CHUNK  # positions per chunk of the loss (and of the held-out logits)
    select_blocks: int = 24  # held-out blocks that choose the checkpoint (every held-out block is reported)
    student_ce: bool = True  # also train the CE-only control into <run-dir>/student_ce
    max_train_blocks: int | None = None  # the first N training blocks (None: all)


PRESETS = {
    "quick": LMStudentConfig(epochs=1, batch_size=8, lr=2e-3, warmup_ratio=0.05, evals_per_epoch=2, patience=0,
                             eval_batch_size=8, save_every_steps=50, weight_decay=0.01),
}


def build_lm_student(cfg: LMStudentConfig, teacher_dir: Path):
    """(causal LM, description for metrics.json)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.student == "subset":
        model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
        layers = model.model.layers
        total = len(layers)
        kept = list(cfg.layer_ids) if cfg.layer_ids else evenly_spaced_layers(total, cfg.keep_layers)
        if [i for i in kept if not 0 <= i < total] or kept != sorted(set(kept)):
            raise ConfigError(f"--layer_ids={kept}: distinct increasing indices in [0, {total}) expected")
        blocks = [layers[i] for i in kept]
        for new, block in enumerate(blocks):  # the KV cache indexes blocks by position
            block.self_attn.layer_idx = new
        model.model.layers = torch.nn.ModuleList(blocks)
        model.config.num_hidden_layers = len(kept)
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = [model.config.layer_types[i] for i in kept]
        return model, {"kind": "subset", "layers_kept": kept, "teacher_layers": total}
    if cfg.student != "fresh":
        raise ConfigError(f"--student={cfg.student!r}: expected fresh or subset (task lm)")
    config = AutoConfig.from_pretrained(teacher_dir)
    if cfg.fresh_hidden % cfg.fresh_heads or cfg.fresh_heads % cfg.fresh_kv_heads:
        raise ConfigError(f"--fresh_hidden={cfg.fresh_hidden}, --fresh_heads={cfg.fresh_heads}, --fresh_kv_heads="
                          f"{cfg.fresh_kv_heads}: heads must divide the width and key/value heads the heads")
    ratio = config.intermediate_size / config.hidden_size
    config.intermediate_size = cfg.fresh_intermediate or int(round(ratio * cfg.fresh_hidden / 64)) * 64 or 64
    config.hidden_size, config.num_hidden_layers = cfg.fresh_hidden, cfg.fresh_layers
    config.num_attention_heads, config.num_key_value_heads = cfg.fresh_heads, cfg.fresh_kv_heads
    config.head_dim = cfg.fresh_hidden // cfg.fresh_heads
    config.tie_word_embeddings = True
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[: cfg.fresh_layers]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model, {"kind": "fresh", "layers": cfg.fresh_layers, "hidden": cfg.fresh_hidden, "heads": cfg.fresh_heads,
                   "kv_heads": cfg.fresh_kv_heads, "intermediate": config.intermediate_size}


def _label_targets(labels: torch.Tensor) -> SparseTargets:
    """Targets that put all mass on the label: what the CE-only control passes (its w_kd is 0)."""
    return SparseTargets(labels[:, None].clone(), torch.zeros(len(labels), 1, device=labels.device),
                         torch.zeros(len(labels), device=labels.device))


@dataclass(frozen=True, kw_only=True)
class StudentRun:
    """One student's training run as its loop left it: what ``_finish`` reports."""

    out: Path  # the run's folder: the best checkpoint (saved by the loop), metrics.json
    role: str  # student | student_ce
    description: dict  # the student's build, from build_lm_student
    summary: dict  # distill.trainer.train's summary (samples_seen, step, world_size, train_seconds, ...)
    wall: float  # seconds from the loop's start to its end
    train_blocks: int  # training blocks an epoch goes over


def train_lm_student(cfg: LMStudentConfig, *, teacher_dir: Path, out: Path, role: str) -> dict:
    """One run: the KD student (``role="student"``) or the CE-only control (``"student_ce"``)."""
    from transformers import AutoTokenizer

    device = setup_distributed(cfg.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    teacher = read_model_info(teacher_dir, hint="make teacher")
    spec = TargetSpec(**teacher.architecture["targets"])
    if role == "student_ce":
        cfg = dataclasses.replace(cfg, w_kd=0.0, w_ce=1.0)
    elif abs(cfg.temperature - spec.temperature) > 1e-9:
        raise ConfigError(f"--temperature={cfg.temperature}: the teacher's targets were cached at T = "
                          f"{spec.temperature} (their tail mass is only known there); train at that T or rescore")
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    data = load_lm_data(teacher.data, tokenizer, teacher_dir / "tokens")  # the teacher's stores (reused)
    train_cache = TargetCache(teacher_dir=teacher_dir, name="train", store=data.train, data_files=data.files, spec=spec)
    targets = open_targets(train_cache) if cfg.w_kd > 0 else None
    heldout_top1 = open_targets(dataclasses.replace(train_cache, name="heldout", store=data.heldout,
                                                    spec=dataclasses.replace(spec, rule="topk", temperature=1.0)))
    top1 = heldout_top1.records["ids"][:, 0].astype(np.int64).reshape(len(data.heldout), -1)  # (B_h, L - 1) argmax
    blocks = data.train.encoded(tokenizer.pad_token_id or 0)
    if cfg.max_train_blocks is not None:
        blocks = blocks.slice(0, min(len(blocks), cfg.max_train_blocks))
    torch.manual_seed(cfg.seed)
    lm, description = build_lm_student(cfg, teacher_dir)
    model = HiddenStates(lm).to(device)
    select = np.asarray(data.heldout.blocks[: cfg.select_blocks])
    weights = LossWeights(w_kd=cfg.w_kd, w_ce=cfg.w_ce, temperature=cfg.temperature)

    def loss_fn(outputs, rows, batch):
        hidden = outputs.hidden[:, :-1].reshape(-1, outputs.hidden.shape[-1])  # (B (L - 1), D)
        labels = batch["input_ids"][:, 1:].reshape(-1)  # (B (L - 1),) the next tokens
        if targets is None:
            sparse = _label_targets(labels)
        else:
            sparse = SparseTargets(*(torch.from_numpy(x.reshape(len(labels), *x.shape[2:])).to(device)
                                     for x in targets.batch(rows)))  # (P, k), (P, k), (P,)
        kd = lm_kd_loss(hidden, outputs.weight, sparse, labels, weights=weights, ignore_index=IGNORE_INDEX,
                        chunk=cfg.position_chunk)
        return kd.loss, ({"ce": kd.ce.item(), "kd": kd.kd.item()} if targets is not None else {"ce": kd.ce.item()})

    def evaluate(trained):
        figures = student_heldout(trained, select, top1[: len(select)], batch_size=cfg.eval_batch_size, device=device,
                                  position_chunk=cfg.position_chunk)
        return {"score": 1.0 / figures["perplexity"], "perplexity": figures["perplexity"],
                "agreement": figures["teacher_top1_agreement"]}

    run_cfg = dataclasses.replace(cfg, teacher_dir=str(teacher_dir))
    info = ModelInfo(role=role, task="lm", labels=[], max_length=teacher.max_length, data=teacher.data,
                     architecture={**description, "teacher": str(teacher_dir), "targets": dataclasses.asdict(spec)})

    def save_best(trained, directory):
        save_model_dir(trained.lm, tokenizer, directory, config=run_cfg, info=info)

    params = sum(p.numel() for p in lm.parameters())
    if rank == 0:
        print(f"{out.name}: {', '.join(f'{k}={v}' for k, v in description.items())} | {params:,} parameters | "
              f"{len(blocks)} blocks of {teacher.max_length} | w_kd {cfg.w_kd} w_ce {cfg.w_ce} T {cfg.temperature} | "
              f"targets {spec.rule} k {spec.k} | {device}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = train(model, cfg=run_cfg, train_set=blocks, evaluate=evaluate, eval_name="heldout", loss_fn=loss_fn,
                    out_dir=out, save_best=save_best)
    wall = time.perf_counter() - start
    if rank != 0:
        return {}
    run = StudentRun(out=out, role=role, description=description, summary=summary, wall=wall,
                     train_blocks=len(blocks))
    return _finish(run, cfg, data=data, top1=top1, device=device)


def _finish(run: StudentRun, cfg: LMStudentConfig, *, data, top1: np.ndarray, device) -> dict:
    """The best checkpoint on every held-out block (``top1`` (B_h, L - 1): the teacher's argmax at
    each position of ``data.heldout``); metrics.json and the model card (README.md, distill/lm_card.py)."""
    from transformers import AutoModelForCausalLM

    out, summary = run.out, run.summary
    best = HiddenStates(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)).to(device)
    figures = student_heldout(best, np.asarray(data.heldout.blocks), top1, batch_size=cfg.eval_batch_size,
                              device=device, position_chunk=cfg.position_chunk)
    length = data.train.blocks.shape[1]
    result = {"task": "lm", "role": run.role, "student": run.description, "seed": cfg.seed, "w_kd": cfg.w_kd,
              "w_ce": cfg.w_ce, "temperature": cfg.temperature, "parameters": sum(p.numel() for p in best.parameters()),
              "heldout": figures, "heldout_perplexity": figures["perplexity"],
              "teacher_top1_agreement": figures["teacher_top1_agreement"], "train_blocks": run.train_blocks,
              "tokens_seen": summary["samples_seen"] * length, "steps_done": summary["step"],
              "world_size": summary["world_size"], "device": str(device), "torch_threads": torch.get_num_threads(),
              **loop_figures(summary, run.wall)}
    result["train_tokens_per_s"] = round(result["tokens_seen"] / max(summary["train_seconds"], 1e-9), 1)
    # not distill.stage.finish_stage: its card (distill/model_card.py) has no lm task. The same order:
    # metrics.json, the card, then the resume checkpoint, so that a crash before the end can resume
    atomic_write_text(out / layout.METRICS_FILE, json.dumps(result, indent=2) + "\n")
    write_lm_card(out)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    print(f"{out.name} done: held-out perplexity {figures['perplexity']:.2f}, teacher top-1 agreement "
          f"{figures['teacher_top1_agreement']:.4f}, {result['tokens_seen']:,} tokens seen at "
          f"{result['train_tokens_per_s']:.0f} tokens/s -> {out}")
    return result


def parse_args(argv: list[str]) -> tuple[LMStudentConfig, Path]:
    parser = argparse.ArgumentParser(prog="python -m distill distill (task lm)", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/demo", help="the run directory holding teacher/")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    args, overrides = parser.parse_known_args(argv)
    return apply_overrides(PRESETS[args.preset], overrides), Path(args.run_dir)


def main(argv: list[str]) -> int:
    cfg, run_dir = parse_args(argv)
    teacher_dir = Path(cfg.teacher_dir) if cfg.teacher_dir else layout.teacher_dir(run_dir)
    train_lm_student(cfg, teacher_dir=teacher_dir, out=layout.student_dir(run_dir), role=layout.STUDENT)
    if cfg.student_ce:
        train_lm_student(cfg, teacher_dir=teacher_dir, out=layout.student_ce_dir(run_dir), role=layout.STUDENT_CE)
    return close_stage(run_dir)  # the process group left, report.md written (rank 0)
