"""Score rows with a trained teacher into its logit cache (``teacher/logits/``), sharded over the
processes of a ``torchrun`` group when there is one. Used by the teacher stage (after training)
and by ``python -m distill score`` (more transfer text for a finished teacher).

What runs the teacher (``Scorer``, TeacherConfig.scorer): PyTorch eager (the default), or on CPU the teacher's
own ONNX Runtime graph, exported once into ``teacher/scorer/<kind>/`` exactly as ``make export``
builds its variants (distill/onnx_graph.py) and checked against PyTorch on the dev rows before it
scores anything: ``onnx`` (fp32, O2-fused: logits within SCORER_MAX_ABS_DIFF of PyTorch's) or
``onnx-int8`` (the portable int8 graph, held to the export's int8 gate). The scorer's name is
part of each cache's fingerprint, so a cache from one never passes as another's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from distill import layout
from distill.artifacts import ModelInfo
from distill.cache import CacheSettings, CacheSpec, Shard, cache_parts, write_logit_cache
from distill.config import ConfigError, atomic_write_text
from distill.data import Dataset, Split, file_digest
from distill.errors import PipelineError
from distill.int8 import DEFAULT_TARGET, GATE
from distill.kd_defaults import IGNORE_INDEX
from distill.tokens import Encoded, encode
from distill.trainer import predict_logits

# TeacherConfig.scorer. PyTorch by default: on the AVX-512/VNNI Xeon of docs/RESULTS.md the fp32 O2 graph
# scored mpnet at 0.82x PyTorch's rows/s (1 thread), the int8 graph at 3.0x; the AVX2-only EPYC
# measured 1.27x and 2.02x for MiniLM at batch 32. Which is faster is the CPU's question, not a default's
SCORERS = ("pytorch", "onnx", "onnx-int8")
SCORER_MAX_ABS_DIFF = 1e-4  # the fp32 O2 graph's dev logits against PyTorch's (the export's fp32/o2 bound)


class ScorerError(RuntimeError, PipelineError):
    """The ONNX Runtime scorer's graph does not reproduce the teacher on the dev rows."""


@dataclass
class Scorer:
    """What turns tokenised rows into teacher logits for the cache."""

    name: str  # pytorch | onnx-fp32-o2 | onnx-int8-<target>: recorded in every cache fingerprint it makes
    forward: Callable[[Encoded, int], np.ndarray]  # (rows, batch size) -> (D, C) float32, one per document
    check: dict = field(default_factory=dict)  # its figures against PyTorch on the dev rows (empty: pytorch)


def pytorch_scorer(model, *, device: torch.device, amp: bool) -> Scorer:
    return Scorer("pytorch", lambda rows, batch_size: predict_logits(model, rows, batch_size=batch_size,
                                                                      device=device, amp=amp))


def resolve_scorer(name: str, device: torch.device) -> str:
    """``name``, checked: one of SCORERS, and ONNX Runtime's CPU graphs are not asked to score on
    a GPU machine."""
    if name not in SCORERS:
        raise ConfigError(f"--scorer={name!r}: choose one of {', '.join(SCORERS)}")
    if name != "pytorch" and device.type == "cuda":
        raise ConfigError(f"--scorer={name}: the ONNX Runtime scorer runs on CPU; on {device} use pytorch or auto")
    return name


def onnx_scorer(teacher_dir: Path, *, kind: str, threads: int, dev: Encoded, reference: np.ndarray,
                batch_size: int) -> Scorer:
    """The teacher's ONNX Runtime graph (``kind`` onnx: fp32 O2, onnx-int8: portable int8) as a
    Scorer, built once into ``teacher/scorer/`` (rank 0; the others wait) and checked against
    PyTorch's dev logits ``reference`` (D, C) on the dev rows ``dev`` before it is used."""
    from distill.onnx_graph import int8_value_figures, ort_document_logits, ort_session

    rank = dist.get_rank() if dist.is_initialized() else 0
    variant = "o2" if kind == "onnx" else "int8"
    if rank == 0:
        build_scorer_graph(teacher_dir, variant)
    if dist.is_initialized():
        dist.barrier()
    path = scorer_dir(teacher_dir) / variant / "model.onnx"
    session = ort_session(path, threads)
    logits = ort_document_logits(session, dev, batch_size=batch_size)  # (D, C)
    figures = int8_value_figures(logits, reference, dev.document_labels, decided_margin=GATE.decided_margin)
    if variant == "o2" and not figures["max_abs_diff"] <= SCORER_MAX_ABS_DIFF:
        raise ScorerError(f"{path}: its dev logits differ from PyTorch's by up to {figures['max_abs_diff']:.2e} "
                          f"(bound {SCORER_MAX_ABS_DIFF:g}); score with --scorer=pytorch")
    if variant == "int8" and not (figures["decided_agreement"] >= GATE.min_decided_agreement
                                  and figures["logit_error"] <= GATE.max_logit_error
                                  and abs(figures["accuracy_delta"]) <= GATE.max_accuracy_delta):
        raise ScorerError(f"{path}: int8 does not hold on the dev rows (decided agreement "
                          f"{figures['decided_agreement']:.4f}, logit error {figures['logit_error']:.3f}, accuracy "
                          f"{100 * figures['accuracy_delta']:+.2f} points; the export's bounds); use --scorer=onnx")
    name = "onnx-fp32-o2" if variant == "o2" else f"onnx-int8-{DEFAULT_TARGET}"
    check = {k: figures[k] for k in ("max_abs_diff", "agreement", "decided_agreement", "logit_error",
                                      "accuracy_delta")} | {"dev_rows": len(reference), "graph": str(path)}
    return Scorer(name, lambda rows, size: ort_document_logits(session, rows, batch_size=size), check)


def scorer_dir(teacher_dir: Path) -> Path:
    return Path(teacher_dir) / "scorer"


def build_scorer_graph(teacher_dir: Path, variant: str) -> Path:
    """``teacher/scorer/<variant>/model.onnx`` (o2 or int8), built from the saved teacher unless
    a build from these exact weights is already there (``built.json`` holds their digest). Built
    in a temp folder beside it and renamed into place: never half there."""
    from distill.onnx_graph import export_fp32, optimise_o2, quantise_weights

    root = scorer_dir(teacher_dir)
    weights = hashlib.sha256("".join(file_digest(w) for w in sorted(Path(teacher_dir).glob("*.safetensors")))
                            .encode()).hexdigest()
    target = root / variant
    stamp = target / "built.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("teacher_weights") == weights:
        return target
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{variant}.build-", dir=root))
    try:
        t0 = time.perf_counter()
        export_fp32(Path(teacher_dir), work / "fp32", 18)
        if variant == "o2":
            optimise_o2(work / "fp32", work / variant)
        else:
            quantise_weights(work / "fp32", work / variant, target_name=DEFAULT_TARGET, per_channel=True,
                             operators=["MatMul", "Attention", "Gather"], exclude=[])
        atomic_write_text(work / variant / "built.json", json.dumps(
            {"teacher_weights": weights, "seconds": round(time.perf_counter() - t0, 1)}) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(work / variant, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


@dataclass
class SavedTeacher:
    """The teacher as saved, loaded again to fill its own caches."""

    model: Any  # the best checkpoint as saved: the exact weights the fingerprints hash
    tokenizer: Any  # its tokenizer (the one saved beside it)
    directory: Path  # teacher/: the weights, distill.json, logits/
    info: ModelInfo  # labels, max length, long_text; score_split records in info.scorers what scored each cache
    device: torch.device  # where the model runs


def score_split(teacher: SavedTeacher, *, name: str, split: Split, data_files: list[str], settings: CacheSettings,
                what: str = "logits", scorer: Scorer | None = None) -> dict:
    """Score ``split`` into ``teacher.directory/logits/<name>.npy`` (resumable, fingerprinted);
    returns rows, bytes, dtype, seconds, rows/s and the scorer. Every rank of a process group must
    call it. ``settings.max_chunks`` time-boxes the call (per process); an unfinished cache reports
    ``complete: False``. ``scorer``: what runs the teacher for logits (None: PyTorch eager on the
    model); its name goes into ``teacher.info.scorers[name]`` (the fingerprint names it, and the
    student's reader finds it in distill.json). ``what="cls"`` caches the per-layer [CLS] states
    instead, as ``<name>.cls`` in float16 (``cls_states``, always PyTorch: the ONNX graphs give
    logits only)."""
    model, info, device = teacher.model, teacher.info, teacher.device
    if what == "logits":
        scorer = scorer or pytorch_scorer(model, device=device, amp=settings.amp)
        forward = scorer.forward
        info.scorers[name] = scorer.name
    else:
        scorer = None
        forward = lambda rows, size: cls_states(model, rows, batch_size=size, device=device, amp=settings.amp)  # noqa: E731
        settings = dataclasses.replace(settings, dtype="float16")  # the states' storage (TeacherConfig.cache_cls)
    parts = cache_parts(teacher.directory, info, name=name, split=split, data_files=data_files, what=what)
    width = len(info.labels) if what == "logits" else cls_width(model)

    def score(start: int, stop: int) -> np.ndarray:
        # one row per document whatever info.long_text (chunks: the forward averages them)
        chunk = encode(teacher.tokenizer, split.subset(np.arange(start, stop)), np.full(stop - start, IGNORE_INDEX),
                       info.max_length, long_text=info.long_text)
        return forward(chunk, settings.batch_size)

    cache = CacheSpec(directory=layout.logits_dir(teacher.directory), name=name if what == "logits" else
                      cls_cache_name(name), split=split, num_labels=width, label_names=info.labels, parts=parts)
    return {**fill_cache(score, cache=cache, settings=settings), "scorer": scorer.name if scorer else "pytorch"}


def fill_cache(score: Callable[[int, int], np.ndarray], *, cache: CacheSpec, settings: CacheSettings) -> dict:
    """``write_logit_cache`` of ``score(start, stop)`` over the rows of ``cache.split`` (every rank
    of a process group calls it), timed: rows, bytes, dtype, seconds, rows/s (ragged,
    ``cache.row_offsets``: also ``logit_rows``, the total of every row's logit rows)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    scored = [0]  # rows this process scored in this call

    def counted(start: int, stop: int) -> np.ndarray:
        scored[0] += stop - start
        return score(start, stop)

    t0 = time.perf_counter()
    manifest = write_logit_cache(counted, cache=cache, settings=settings,
                                 shard=Shard(rank=rank, world=world, barrier=dist.barrier if world > 1 else (lambda: None)))
    seconds = time.perf_counter() - t0
    if manifest is None:  # time-boxed and unfinished: this process's rows/s over what it scored in this call
        return {"rows": len(cache.split), "complete": False, "rows_scored_this_call": scored[0],
                "seconds": round(seconds, 2), "rows_per_s": round(scored[0] / max(seconds, 1e-9), 1),
                "processes": world, "bytes": 0, "dtype": settings.dtype}
    written = json.loads(manifest.read_text())
    return {"rows": written["rows"], "complete": True, "bytes": written["file_bytes"], "dtype": written["dtype"],
            "seconds": round(seconds, 2), "rows_per_s": round(written["rows"] / max(seconds, 1e-9), 1),
            "processes": world, **({} if cache.row_offsets is None else {"logit_rows": written["shape"][0]})}


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
