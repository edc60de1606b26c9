"""Score rows with a trained teacher into its logit cache (``teacher/logits/``), sharded over the
processes of a ``torchrun`` group when there is one. Used by the teacher stage (after training)
and by ``python -m distill score`` (more transfer text for a finished teacher)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from distill.artifacts import ModelInfo
from distill.cache import fingerprint_parts, write_logit_cache
from distill.data import Dataset, Split
from distill.kd_defaults import IGNORE_INDEX
from distill.tokens import encode
from distill.trainer import predict_logits


def score_split(model, tokenizer, *, teacher_dir: Path, info: ModelInfo, name: str, split: Split, data_files: list[str],
                device: torch.device, batch_size: int, dtype: str, chunk_rows: int, amp: bool,
                max_chunks: int | None = None, what: str = "logits") -> dict:
    """Score ``split`` into ``teacher_dir/logits/<name>.npy`` (resumable, fingerprinted); returns
    rows, bytes, dtype, seconds and rows/s. Every rank of a process group must call it.
    ``max_chunks`` time-boxes the call (per process); an unfinished cache reports ``complete: False``.
    ``what="cls"`` caches the per-layer [CLS] states instead, as ``<name>.cls`` (``cls_states``)."""
    parts = fingerprint_parts(teacher_dir=teacher_dir, max_length=info.max_length, data_files=data_files, split=split,
                              long_text=info.long_text)
    forward = predict_logits if what == "logits" else cls_states
    if what == "cls":
        parts = {**parts, "states": "cls per layer"}
        name = cls_cache_name(name)
    width = len(info.labels) if what == "logits" else cls_width(model)


    def score(start: int, stop: int) -> np.ndarray:
        # one row per document whatever info.long_text (chunks: predict_logits averages them)
        chunk = encode(tokenizer, split.subset(np.arange(start, stop)), np.full(stop - start, IGNORE_INDEX),
                       info.max_length, long_text=info.long_text_settings())
        return forward(model, chunk, batch_size=batch_size, device=device, amp=amp)

    return write_scored(score, directory=teacher_dir / "logits", name=name, split=split, width=width,
                        label_names=info.labels, parts=parts, dtype=dtype, chunk_rows=chunk_rows,
                        max_chunks=max_chunks)


def write_scored(score, *, directory: Path, name: str, split: Split, width: int, label_names: list[str], parts: dict,
                 dtype: str, chunk_rows: int, max_chunks: int | None, row_offsets: np.ndarray | None = None) -> dict:
    """``write_logit_cache`` of ``score(start, stop)`` over the rows of ``split`` (every rank of a
    process group calls it), timed: rows, bytes, dtype, seconds, rows/s (ragged, ``row_offsets``:
    also ``logit_rows``, the total of every row's logit rows)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    scored = [0]  # rows this process scored in this call

    def counted(start: int, stop: int) -> np.ndarray:
        scored[0] += stop - start
        return score(start, stop)

    t0 = time.perf_counter()
    manifest = write_logit_cache(counted, directory=directory, name=name, split=split,
                                 num_labels=width, label_names=label_names, parts=parts, dtype=dtype,
                                 chunk_rows=chunk_rows, rank=rank, world=world,
                                 barrier=dist.barrier if world > 1 else (lambda: None), max_chunks=max_chunks,
                                 row_offsets=row_offsets)
    seconds = time.perf_counter() - t0
    if manifest is None:  # time-boxed and unfinished: this process's rows/s over what it scored in this call
        return {"rows": len(split), "complete": False, "rows_scored_this_call": scored[0],
                "seconds": round(seconds, 2), "rows_per_s": round(scored[0] / max(seconds, 1e-9), 1),
                "processes": world, "bytes": 0, "dtype": dtype}
    written = json.loads(manifest.read_text())
    return {"rows": written["rows"], "complete": True, "bytes": written["file_bytes"], "dtype": written["dtype"],
            "seconds": round(seconds, 2), "rows_per_s": round(written["rows"] / max(seconds, 1e-9), 1),
            "processes": world, **({} if row_offsets is None else {"logit_rows": written["shape"][0]})}


def cls_cache_name(name: str) -> str:
    return f"{name}.cls"


def cls_width(model) -> int:
    """Floats per row of a [CLS]-state cache: (layers + 1) x hidden (embeddings included)."""
    return (model.config.num_hidden_layers + 1) * model.config.hidden_size


@torch.no_grad()
def cls_states(model, encoded, *, batch_size: int, device: torch.device, amp: bool = False) -> np.ndarray:
    """(R, (L + 1) * H) float32: position 0's hidden state after the embeddings and after every
    block (BERT-PKD's cached targets), rows in dataset order, run sorted by length."""
    model.eval()
    order = np.argsort(encoded.lengths, kind="stable")
    out = np.empty((len(encoded), cls_width(model)), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            hidden = model(**encoded.batch(rows, device), output_hidden_states=True).hidden_states
        out[rows] = torch.stack([h[:, 0] for h in hidden], dim=1).flatten(1).float().cpu().numpy()  # (B, (L+1)*H)
    return out


def split_files(name: str, dataset: Dataset, source: dict | None) -> list[str]:
    """The files whose bytes a cache's fingerprint covers: the dataset's for the training split and
    for sets derived from it, the file itself for a transfer file, every file in a folder."""
    if source is None or source["kind"] != "file":
        return dataset.files
    path = Path(source["path"])
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file() and p.name.endswith((".txt", ".txt.gz")))
    return [str(path)]
