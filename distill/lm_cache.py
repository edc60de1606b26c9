"""Sparse next-token targets of a causal-LM teacher, cached to disk.

The full distribution cannot be stored (49,152 fp32 values are 196 KB a token), so each predicted
position keeps one fixed-size record (``record_dtype(k)``, 6k + 4 bytes: 196 at k = 32):

    ids     (k,) int32    token ids; -1 marks an unused slot
    values  (k,) fp16     log of each id's target probability
    tail    ()   fp32     the probability mass outside ``ids`` (rule topk), 0 (rule sample)

under one of two rules (``TargetSpec.rule``):

    topk    the teacher's k most probable tokens (descending) with their log-probabilities, and the
            remaining mass summed over the other V - k tokens (not 1 minus the top-k sum: no
            cancellation). The loss's KL is then exact over the k + 1 outcomes "each of the k ids,
            or any other token"; it is biased against the full KL (the tail's shape is unknown).
    sample  k draws with replacement from the teacher's distribution (Sparse Logit Sampling,
            Anshumann et al., ACL 2025): the distinct ids drawn, each with weight count / k. The
            weights' cross-entropy is an unbiased estimate of the teacher's, and so is its gradient.

Both are at the teacher's temperature ``temperature`` (softmax(z / T)), fixed when the cache is
written: the tail mass of a softened distribution cannot be recovered from a cache made at
another T, so the student must train at the cache's T (distill.lm_loss checks it).

Storage is ``distill.cache``'s ragged cache with byte records (dtype uint8): one cache row per
block (its text hash is the block's tokens), L - 1 records per block (positions 0 .. L-2, each
predicting the next token of the block); the same fingerprint (teacher weights, tokenizer, block
length, data files, rows, plus the target settings), chunking, atomic writes, resume, sharding
under torchrun and stale / truncated / corrupted refusal. ``open_targets`` views the records as
the structured dtype.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from distill import layout
from distill.cache import CacheSettings, CacheSpec, fingerprint_parts, open_logit_cache
from distill.config import ConfigError
from distill.data import Split
from distill.lm_data import TokenStore

RULES = ("topk", "sample")
TARGETS_FORMAT = 1


@dataclass(frozen=True)
class TargetSpec:
    """What each cached position holds (see the module docstring)."""

    rule: str = "topk"  # topk | sample
    k: int = 32  # ids per position (196 bytes a token at 32)
    temperature: float = 1.0  # the teacher's softening when scored; the student trains at the same T
    seed: int = 0  # rule sample: draws of block b use a generator seeded by (seed, b)

    def check(self) -> None:
        if self.rule not in RULES:
            raise ConfigError(f"--target_rule={self.rule!r}: expected one of {', '.join(RULES)}")
        if not 1 <= self.k <= 4096:
            raise ConfigError(f"--target_k={self.k}: expected 1 .. 4096")
        if self.temperature <= 0:
            raise ConfigError(f"--target_temperature={self.temperature}: expected > 0")

    def parts(self) -> dict:
        return {"targets": {**asdict(self), "format": TARGETS_FORMAT}}


def record_dtype(k: int) -> np.dtype:
    """One position's record, packed (6k + 4 bytes)."""
    return np.dtype([("ids", "<i4", (k,)), ("values", "<f2", (k,)), ("tail", "<f4")])


def bytes_per_token(k: int) -> int:
    return record_dtype(k).itemsize


def sparse_targets(logits, spec: TargetSpec, *, generator=None) -> np.ndarray:
    """logits (P, V) float (torch) -> (P,) records of ``spec``'s rule at its temperature."""
    import torch

    log_p = torch.log_softmax(logits.float() / spec.temperature, dim=-1)  # (P, V)
    out = np.zeros(len(log_p), dtype=record_dtype(spec.k))
    if spec.rule == "topk":
        values, ids = log_p.topk(spec.k, dim=-1)  # (P, k) descending
        rest = log_p.scatter(1, ids, float("-inf"))  # (P, V) the other tokens only
        out["ids"] = ids.numpy().astype(np.int32)
        out["values"] = values.numpy().astype(np.float16)
        out["tail"] = torch.logsumexp(rest, dim=-1).exp().numpy().astype(np.float32)  # Σ over the V - k others
        return out
    draws = torch.multinomial(log_p.exp(), spec.k, replacement=True, generator=generator)  # (P, k)
    draws, _ = draws.sort(dim=-1)
    for i, row in enumerate(draws.numpy()):
        ids, counts = np.unique(row, return_counts=True)  # distinct ids, ascending
        out["ids"][i, : len(ids)] = ids
        out["ids"][i, len(ids):] = -1
        out["values"][i, : len(ids)] = np.log(counts / spec.k).astype(np.float16)
        out["values"][i, len(ids):] = -np.inf
    return out  # tail 0


@dataclass(frozen=True, kw_only=True)
class TargetCache:
    """One split's sparse-target cache: where it lives and what its fingerprint holds. The writer
    (``score_targets``) and the reader (``open_targets``) take the same value, so they cannot
    fingerprint it differently."""

    teacher_dir: Path  # the teacher stage's folder; the cache is teacher_dir/logits/<name>
    name: str  # the split's cache name: train | heldout
    store: TokenStore  # the split's blocks (B, L) int32
    data_files: list[str]  # the data files the blocks came from (fingerprinted)
    spec: TargetSpec  # what each position's record holds

    @property
    def length(self) -> int:
        """L, the block length: L - 1 records per block (positions 0 .. L-2 predict tokens 1 .. L-1)."""
        return self.store.blocks.shape[1]

    def parts(self, split: Split) -> dict:
        """The fingerprint: teacher, tokenizer, block length, data files, rows (``split``: the
        store's ``as_split()``, which the caller also needs), and the target settings."""
        return {**fingerprint_parts(teacher_dir=self.teacher_dir, max_length=self.length, data_files=self.data_files,
                                    split=split), **self.spec.parts()}


def score_targets(model, cache: TargetCache, *, device, batch_size: int, chunk_rows: int,
                  max_chunks: int | None = None) -> dict:
    """Score every block of ``cache.store`` into ``teacher_dir/logits/<name>`` (resumable,
    fingerprinted, sharded under torchrun; ``batch_size`` blocks per forward, ``chunk_rows`` blocks
    per cache chunk, at most ``max_chunks`` chunks this call); returns rows, positions, bytes,
    seconds, tokens/s."""
    import torch

    from distill.scoring import fill_cache

    spec, store = cache.spec, cache.store
    spec.check()
    split = store.as_split()
    length = cache.length
    per_block = length - 1  # positions 0 .. L-2 predict tokens 1 .. L-1
    record = record_dtype(spec.k)
    parts = cache.parts(split)

    scored = [0]  # blocks scored by this process in this call (a resumed call skips the finished ones)

    @torch.no_grad()
    def score(start: int, stop: int) -> np.ndarray:
        model.eval()
        scored[0] += stop - start
        out = np.empty((stop - start) * per_block, dtype=record)
        for b0 in range(start, stop, batch_size):
            ids = torch.from_numpy(np.asarray(store.blocks[b0:min(stop, b0 + batch_size)], dtype=np.int64)).to(device)
            logits = model(input_ids=ids).logits[:, :-1].float().cpu()  # (b, L - 1, V)
            for j in range(len(ids)):
                block = b0 + j
                generator = torch.Generator().manual_seed(spec.seed * 1_000_003 + block)
                row = (block - start) * per_block
                out[row:row + per_block] = sparse_targets(logits[j], spec, generator=generator)
        return out.view(np.uint8).reshape(len(out), record.itemsize)  # (P, bytes) byte records

    offsets = np.arange(len(split) + 1, dtype=np.int64) * per_block
    t0 = time.perf_counter()
    # one row of bytes per position: (positions, k records) stored as uint8, ragged by block
    target = CacheSpec(directory=layout.logits_dir(cache.teacher_dir), name=cache.name, split=split,
                       num_labels=record.itemsize, label_names=[], parts=parts, row_offsets=offsets)
    report = fill_cache(score, cache=target,
                        settings=CacheSettings(dtype="uint8", chunk_rows=chunk_rows, max_chunks=max_chunks))
    seconds = time.perf_counter() - t0
    positions = len(split) * per_block
    report.update(positions=positions, bytes_per_token=record.itemsize, rule=spec.rule, k=spec.k,
                  temperature=spec.temperature)
    report["blocks_scored_this_call"] = scored[0]
    report["tokens_per_s"] = round(scored[0] * length / max(seconds, 1e-9), 1) if scored[0] else None
    return report


@dataclass
class Targets:
    """An opened sparse-target cache: one record per predicted position."""

    records: np.ndarray  # (B * (L - 1),) structured record_dtype(k), memory-mapped
    spec: TargetSpec
    per_block: int  # L - 1

    def batch(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """blocks (n,) -> ids (n, L-1, k) int64, log-probs (n, L-1, k) float32, tail (n, L-1) float32."""
        rows = (np.asarray(blocks)[:, None] * self.per_block + np.arange(self.per_block)[None, :]).reshape(-1)
        picked = self.records[rows]
        shape = (len(blocks), self.per_block)
        return (picked["ids"].astype(np.int64).reshape(*shape, -1),
                picked["values"].astype(np.float32).reshape(*shape, -1), picked["tail"].astype(np.float32).reshape(shape))


def open_targets(cache: TargetCache) -> Targets:
    """Open ``cache``'s records, refusing (CacheError) one that is stale (other teacher, tokenizer,
    blocks or target settings), unfinished, truncated or corrupted."""
    split = cache.store.as_split()
    opened = open_logit_cache(layout.logits_dir(cache.teacher_dir), cache.name, expected_parts=cache.parts(split))
    opened.check_rows(split)
    record = record_dtype(cache.spec.k)
    records = np.asarray(opened.logits).view(record).reshape(-1)  # (P,) no copy: a view of the memory map
    return Targets(records=records, spec=cache.spec, per_block=cache.length - 1)
