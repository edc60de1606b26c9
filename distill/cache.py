"""The teacher's logit cache: a memory-mappable ``.npy`` array per split, written in chunks,
atomically and resumably, and tied by a fingerprint to the teacher, tokenizer and data.

Files in the cache directory, for a split ``name``:

    name.npy             (R, C) fp32 or fp16 raw logits, rows in dataset order (np.load(mmap_mode="r")); or
                         uint8 byte records of C bytes (the sparse LM targets, distill/lm_cache.py)
    name.texthash.npy    (R, 8) uint8: first 8 bytes of sha256 of each row's text, to line rows up
    name.manifest.json   shape, dtype, label names, fingerprint and its parts, sha256 of name.npy

A ragged cache (``row_offsets``: per-word logits of sentences, distill/ner.py) has several logit
rows per example: ``name.npy`` is (N, C) with N the total of every example's rows, and

    name.offsets.npy     (U + 1,) int64: example u owns rows offsets[u]:offsets[u + 1] of name.npy

while the text hashes and the manifest's ``rows`` count the U examples; chunks are then chunks of
examples. The manifest holds the offsets' sha256, and a reader checks them like the array.

While writing, ``name.npy.partial`` holds the array and ``name.progress.<rank>.json`` the chunks
each process finished (with a sha256 per chunk). An interrupted write resumes with the chunks not
done (or damaged since), under any number of processes; chunks are scored in a fixed composition,
so the resumed file is byte-identical to an uninterrupted one. The final rename happens only when every chunk
is in, so a reader never sees a partial cache under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.config import atomic_write_text
from distill.data import Split, file_digest, text_hashes
from distill.disk import DiskFullError, require_free, reserve
from distill.errors import PipelineError

CACHE_FORMAT = 1
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "merges.txt", "vocab.json", "spm.model", "sentencepiece.bpe.model", "added_tokens.json")


class CacheError(RuntimeError, PipelineError):
    """A logit cache that is missing, stale, truncated, corrupted or does not fit the data."""


def fingerprint_parts(*, teacher_dir: Path, max_length: int, data_files: list[str], split: Split,
                      long_text: dict | None = None, scorer: str = "pytorch") -> dict:
    """What a cache depends on. Any change to the teacher weights, the tokenizer files, the max
    length, how long texts are cut (``long_text``, distill.tokens.LongText as a dict; truncate adds
    nothing, so caches written before it keep their fingerprint), the bytes of the data files,
    which rows were taken, or what ran the teacher (``scorer``, distill/scoring.py: pytorch adds
    nothing, as for long_text) makes a different fingerprint."""
    teacher_dir = Path(teacher_dir)
    weights = sorted(teacher_dir.glob("*.safetensors"))
    if not weights:
        raise CacheError(f"{teacher_dir}: no *.safetensors weights to fingerprint")
    tokenizer = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (teacher_dir / name).is_file():
            tokenizer.update(name.encode() + b"\0" + bytes.fromhex(file_digest(teacher_dir / name)))
    rows = hashlib.sha256(text_hashes(split).tobytes()).hexdigest()
    return {
        "teacher_weights": hashlib.sha256("".join(file_digest(w) for w in weights).encode()).hexdigest(),
        "tokenizer": tokenizer.hexdigest(),
        "max_length": int(max_length),
        "data_files": _data_digests(data_files),
        "rows": rows,
        "row_count": len(split),
        **({"long_text": long_text} if long_text and long_text.get("mode", "truncate") != "truncate" else {}),
        **({"scorer": scorer} if scorer != "pytorch" else {}),
    }


def _data_digests(files: list[str]) -> dict[str, str]:
    # keyed by the path below the files' common folder: class folders hold many "1.txt"s, and
    # where the dataset directory sits must not change the fingerprint
    if not files:
        return {}
    root = Path(os.path.commonpath([str(Path(f).resolve().parent) for f in files]))
    return {str(Path(f).resolve().relative_to(root)): file_digest(f) for f in files}


def fingerprint_of(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass
class LogitCache:
    """An opened cache. ``logits`` is a read-only memory map: (R, C) in the stored dtype."""

    directory: Path
    name: str
    manifest: dict
    logits: np.ndarray  # (R, C) memmap; ragged: (N, C), N the rows of all examples
    text_hashes: np.ndarray  # (R, 8) uint8, one per example
    offsets: np.ndarray | None = None  # ragged only: (R + 1,) int64, example r owns logits[offsets[r]:offsets[r + 1]]

    def check_rows(self, split: Split) -> None:
        """Raise unless ``split``'s rows are the cached rows, in the same order."""
        if len(split) != len(self.text_hashes):
            raise CacheError(f"{self._path()}: cache has {len(self.text_hashes)} rows, the data has {len(split)}")
        mismatch = np.nonzero((text_hashes(split) != self.text_hashes).any(axis=1))[0]
        if len(mismatch):
            i = int(mismatch[0])
            raise CacheError(f"{self._path()}: row {i} of the cache was made from different text than "
                             f"row {i} of {split.source} ({split.texts[i][:60]!r}); {len(mismatch)} rows differ")

    def _path(self) -> Path:
        return self.directory / f"{self.name}.npy"


def _sha256_bytes(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def write_logit_cache(
    score: Callable[[int, int], np.ndarray],
    *,
    directory: Path,
    name: str,
    split: Split,
    num_labels: int,
    label_names: list[str],
    parts: dict,
    dtype: str = "float32",
    chunk_rows: int = 4096,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] = lambda: None,
    max_chunks: int | None = None,
    row_offsets: np.ndarray | None = None,
) -> Path | None:
    """Score ``split`` chunk by chunk with ``score(start, stop) -> (stop - start, C) float32`` and
    write the cache. Resumes an interrupted write with the same fingerprint; skips the work when
    a complete cache with this fingerprint is already there. Returns the manifest path.

    Sharded (``world`` > 1, every rank calls this with the same arguments and a ``barrier`` that
    waits for all of them): rank r scores chunks r, r + world, ... into the shared ``.partial``
    memory map (disjoint rows) and records them in its own progress file; rank 0 then checks that
    every chunk is in and installs the cache. Each chunk is scored in a fixed composition, so the
    result does not depend on the number of processes (byte-identical at equal thread counts).

    ``max_chunks``: score at most this many chunks in this call (a time box); when chunks are
    left, the partial write stays resumable and None is returned.

    ``row_offsets`` (a ragged cache, see the module docstring): (R + 1,) int64, row r of ``split``
    owns logit rows row_offsets[r]:row_offsets[r + 1]; ``chunk_rows`` then counts rows of ``split``,
    and ``score(start, stop)`` returns (row_offsets[stop] - row_offsets[start], C)."""
    if dtype not in ("float32", "float16", "uint8"):  # uint8: fixed-size byte records (distill/lm_cache.py)
        raise ValueError(f"cache dtype must be float32 or float16 (or uint8 byte records), not {dtype!r}")
    offsets = _offsets(row_offsets, len(split))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fingerprint = fingerprint_of(parts)
    final, manifest_path = directory / f"{name}.npy", directory / f"{name}.manifest.json"
    partial = directory / f"{name}.npy.partial"
    hashes_path = directory / f"{name}.texthash.npy"
    rows = len(split)
    if _complete(manifest_path, final, hashes_path, fingerprint, split, offsets if row_offsets is not None else None):
        return manifest_path  # already complete and intact
    layout = {"fingerprint": fingerprint, "rows": rows, "num_labels": num_labels, "dtype": dtype,
              "chunk_rows": chunk_rows}
    if row_offsets is not None:
        layout["offsets_sha256"] = _sha256_bytes(offsets)
    n_chunks = (rows + chunk_rows - 1) // chunk_rows
    done = _verified_chunks(directory, name, layout, partial, offsets) if partial.exists() else {}
    barrier()  # every rank has read the progress files before any rank writes
    if rank == 0 and not done:  # one rank 0 only: the stage holds the directory's lock (distill/lock.py)
        for old in _progress_files(directory, name):
            old.unlink()
        _allocate(partial, dtype=dtype, shape=(int(offsets[-1]), num_labels))
    barrier()  # the .partial exists before any rank maps it
    mine = {i: done[i] for i in done if i % world == rank}
    progress_path = directory / f"{name}.progress.{rank}.json"
    array = np.load(partial, mmap_mode="r+")
    new = 0
    for i in range(rank, n_chunks, world):
        if i in mine:
            continue
        if max_chunks is not None and new >= max_chunks:
            break
        new += 1
        start, stop = i * chunk_rows, min(rows, (i + 1) * chunk_rows)
        first, last = int(offsets[start]), int(offsets[stop])  # its logit rows (= start, stop unless ragged)
        logits = score(start, stop)
        if logits.shape != (last - first, num_labels):
            raise CacheError(f"scorer returned {logits.shape} for rows {start}:{stop}, expected "
                             f"{(last - first, num_labels)}")
        array[first:last] = _finite_for_storage(logits, dtype=dtype, final=final, name=name, split=split,
                                                first=first, offsets=offsets)
        array.flush()
        mine[i] = _sha256_bytes(array[first:last])
        atomic_write_text(progress_path, json.dumps({**layout, "chunks": {str(k): v for k, v in mine.items()}}))
    del array
    barrier()  # every rank's chunks are in
    if max_chunks is not None and len(_verified_chunks(directory, name, layout, partial, offsets)) < n_chunks:
        return None  # time-boxed: the rest is scored by the next call
    if rank == 0:
        missing = sorted(set(range(n_chunks)) - set(_verified_chunks(directory, name, layout, partial, offsets)))
        if missing:
            raise CacheError(f"{partial}: chunks {missing[:10]} are missing after scoring (a rank failed?)")
        _install(directory, name, split, partial, fingerprint, num_labels, label_names, parts, dtype,
                 offsets if row_offsets is not None else None)
    barrier()  # no rank reads the cache before it is installed
    return manifest_path


def _allocate(partial: Path, *, dtype: str, shape: tuple[int, int]) -> None:
    """A new ``.partial`` array of ``shape``, its blocks allocated for real: the memory map would
    otherwise be a sparse file, and a disk that fills while it is written kills the process (SIGBUS)."""
    data_bytes = shape[0] * shape[1] * np.dtype(dtype).itemsize
    already = partial.stat().st_blocks * 512 if partial.exists() else 0  # freed as it is re-created
    require_free(partial.parent, data_bytes + 4096 - already, what=f"the logit cache {partial.name}")
    np.lib.format.open_memmap(partial, mode="w+", dtype=np.dtype(dtype), shape=shape).flush()
    try:
        reserve(partial, what=f"the logit cache {partial.name}")
    except DiskFullError:
        partial.unlink()  # holds nothing yet; the next run makes it again
        raise


def _finite_for_storage(scores: np.ndarray, *, dtype: str, final: Path, name: str, split: Split, first: int,
                        offsets: np.ndarray) -> np.ndarray:
    """``scores`` (one chunk's logit rows, from logit row ``first`` on) in the stored dtype, or a
    ``CacheError`` naming the first dataset row holding a NaN or an infinity there (a float16 cache
    turns values past 65504 into inf): none of the chunk is written, the chunks before it are kept."""
    with np.errstate(over="ignore"):  # an overflow to inf is what the check below reports
        stored = scores.astype(dtype)  # (K, C)
    bad = np.nonzero(~np.isfinite(stored).all(axis=1))[0]  # bad logit rows of the chunk
    if not len(bad):
        return stored
    row = int(np.searchsorted(offsets, first + bad[0], side="right")) - 1  # its example (= the row unless ragged)
    overflow = dtype == "float16" and np.isfinite(scores[bad[0]]).all()
    kind = "too large for float16 (use --cache_dtype=float32)" if overflow else "not finite (NaN or inf)"
    raise CacheError(f"{final}: set {name}: the teacher's scores for row {row} of {split.source} are {kind} "
                     f"(rows of its chunk like it: {len(bad)}); none of the chunk is cached, the chunks before it are kept")


def _offsets(row_offsets: np.ndarray | None, rows: int) -> np.ndarray:
    """(rows + 1,) int64 logit-row offsets of the rows: 0..rows unless ragged (checked)."""
    if row_offsets is None:
        return np.arange(rows + 1, dtype=np.int64)
    offsets = np.asarray(row_offsets, dtype=np.int64)
    if offsets.shape != (rows + 1,) or (rows + 1 and offsets[0] != 0) or np.any(np.diff(offsets) < 0):
        raise ValueError(f"row_offsets must be ({rows + 1},) non-decreasing from 0, got shape {offsets.shape}")
    return offsets


def _offsets_path(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}.offsets.npy"


def _complete(manifest_path: Path, final: Path, hashes_path: Path, fingerprint: str, split: Split,
              offsets: np.ndarray | None = None) -> bool:
    if not (manifest_path.exists() and final.exists() and hashes_path.exists()):
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
        same_offsets = offsets is None or (
            manifest.get("offsets_sha256") == _sha256_bytes(offsets)
            and np.array_equal(np.load(final.with_suffix(".offsets.npy")), offsets))  # name.npy -> name.offsets.npy
        return (manifest.get("fingerprint") == fingerprint and file_digest(final) == manifest.get("file_sha256")
                and np.array_equal(np.load(hashes_path), text_hashes(split)) and same_offsets)
    except (OSError, ValueError, EOFError):  # an unreadable manifest, hash or offsets file: rebuild
        return False


def _progress_files(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"{name}.progress.*.json"))


def _verified_chunks(directory: Path, name: str, layout: dict, partial: Path, offsets: np.ndarray) -> dict[int, str]:
    """Chunks recorded by any rank's progress file (of this layout) whose bytes in ``partial``
    still match their sha256; a damaged chunk is left out, so it is scored again."""
    recorded: dict[int, str] = {}
    for path in _progress_files(directory, name):
        try:
            progress = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if {k: progress.get(k) for k in layout} == layout:
            recorded.update({int(k): v for k, v in progress.get("chunks", {}).items()})
    if not recorded:
        return {}
    try:
        array = np.load(partial, mmap_mode="r")
    except (OSError, ValueError):
        return {}
    chunk, rows = layout["chunk_rows"], layout["rows"]

    def logit_rows(i: int) -> slice:  # chunk i's rows of the array (ragged: its examples' rows)
        return slice(int(offsets[min(i * chunk, rows)]), int(offsets[min((i + 1) * chunk, rows)]))

    good = {i: sha for i, sha in recorded.items() if _sha256_bytes(array[logit_rows(i)]) == sha}
    del array
    return good


def _install(directory: Path, name: str, split: Split, partial: Path, fingerprint: str, num_labels: int,
             label_names: list[str], parts: dict, dtype: str, offsets: np.ndarray | None = None) -> None:
    """Swap the finished ``.partial`` in under the final name, with its text hashes (and, ragged,
    its offsets) and manifest."""
    final, manifest_path = directory / f"{name}.npy", directory / f"{name}.manifest.json"
    hashes_tmp = directory / f".{name}.texthash.tmp.npy"
    np.save(hashes_tmp, text_hashes(split))
    if offsets is not None:
        np.save(directory / f".{name}.offsets.tmp.npy", offsets)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    rows = len(split)
    manifest = {
        "format": CACHE_FORMAT, "name": name, "shape": [rows if offsets is None else int(offsets[-1]), num_labels],
        "dtype": dtype, "rows": rows,
        "label_names": label_names, "source": split.source, "fingerprint": fingerprint, "parts": parts,
        "file_sha256": file_digest(partial), "file_bytes": partial.stat().st_size,
        **({} if offsets is None else {"offsets_sha256": _sha256_bytes(offsets)}),
    }
    # the old manifest goes first: a crash between the renames below must not leave it vouching
    # for a mix of old and new files (a reader then sees an unfinished write, and a rerun resumes)
    manifest_path.unlink(missing_ok=True)
    os.replace(hashes_tmp, directory / f"{name}.texthash.npy")
    if offsets is not None:
        os.replace(directory / f".{name}.offsets.tmp.npy", _offsets_path(directory, name))
    os.replace(partial, final)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    for path in _progress_files(directory, name):
        path.unlink()


def open_logit_cache(directory: Path, name: str, *, expected_parts: dict | None, verify: bool = True
                     ) -> LogitCache:
    """Open a cache for reading. Refuses (``CacheError``) a missing, unfinished, truncated or
    corrupted cache, and — when ``expected_parts`` is given — one made from another teacher,
    tokenizer or data."""
    directory = Path(directory)
    final, manifest_path = directory / f"{name}.npy", directory / f"{name}.manifest.json"
    if not manifest_path.exists():
        hint = " (an unfinished write is there: rerun the teacher stage to resume it)" if _progress_files(
            directory, name) else ""
        raise CacheError(f"{manifest_path}: no logit cache manifest{hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise CacheError(f"{manifest_path}: manifest is not valid JSON ({err.msg})") from err
    if manifest.get("format") != CACHE_FORMAT:
        raise CacheError(f"{manifest_path}: cache format {manifest.get('format')}, this code reads {CACHE_FORMAT}")
    if expected_parts is not None and manifest["fingerprint"] != fingerprint_of(expected_parts):
        changed = sorted(k for k in set(expected_parts) | set(manifest["parts"])
                         if expected_parts.get(k) != manifest["parts"].get(k))
        raise CacheError(f"{final}: stale logit cache — it was made from a different "
                         f"{', '.join(changed)}; rerun the teacher stage to rebuild it")
    if not final.exists():
        raise CacheError(f"{final}: cache array missing")
    size = final.stat().st_size
    if size != manifest["file_bytes"]:
        raise CacheError(f"{final}: {size} bytes, the manifest says {manifest['file_bytes']} (truncated or replaced)")
    if verify and file_digest(final) != manifest["file_sha256"]:
        raise CacheError(f"{final}: contents do not match the manifest's sha256 (corrupted)")
    logits = np.load(final, mmap_mode="r")
    if list(logits.shape) != manifest["shape"] or str(logits.dtype) != manifest["dtype"]:
        raise CacheError(f"{final}: array is {logits.shape} {logits.dtype}, manifest says "
                         f"{manifest['shape']} {manifest['dtype']}")
    try:
        hashes = np.load(directory / f"{name}.texthash.npy")
    except (OSError, ValueError, EOFError) as err:
        raise CacheError(f"{directory / f'{name}.texthash.npy'}: missing or unreadable ({err})") from err
    if hashes.shape != (manifest["rows"], 8):
        raise CacheError(f"{directory / f'{name}.texthash.npy'}: wrong shape {hashes.shape}")
    offsets = None
    if "offsets_sha256" in manifest:  # ragged: which logit rows are each example's
        path = _offsets_path(directory, name)
        try:
            offsets = np.load(path)
        except (OSError, ValueError, EOFError) as err:
            raise CacheError(f"{path}: missing or unreadable ({err})") from err
        if offsets.shape != (manifest["rows"] + 1,) or int(offsets[-1]) != manifest["shape"][0]:
            raise CacheError(f"{path}: offsets {offsets.shape} ending at {offsets[-1] if len(offsets) else None} do not "
                             f"fit {manifest['rows']} rows of {manifest['shape'][0]} logit rows (truncated or replaced)")
        if _sha256_bytes(offsets.astype(np.int64)) != manifest["offsets_sha256"]:
            raise CacheError(f"{path}: contents do not match the manifest's sha256 (corrupted)")
    return LogitCache(directory=directory, name=name, manifest=manifest, logits=logits, text_hashes=hashes,
                      offsets=offsets)


class TeacherLogits:
    """Teacher logits for any row of several caches (train, then each transfer set), indexed by
    one global row number (memory-mapped; only the rows of a batch are read). Ragged caches read as
    one number their word rows the same way, and their sentences by ``joint_offsets``."""

    def __init__(self, caches: list[np.ndarray]):
        self.caches = caches  # each (R_k, C)
        self.offsets = np.cumsum([0] + [len(c) for c in caches])  # (K + 1,)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        """rows: (B,) global row numbers -> (B, C) float32."""
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), self.caches[0].shape[1]), dtype=np.float32)
        for k in np.unique(which):
            sel = which == k
            out[sel] = self.caches[k][rows[sel] - self.offsets[k]]
        return out


def joint_offsets(offsets: list[np.ndarray]) -> np.ndarray:
    """(S_0 + S_1 + ... + 1,) int64 logit-row offsets of several ragged caches read as one (each
    (S_k + 1,)): example s of cache k is joint example S_0 + ... + S_{k-1} + s, and its rows follow
    those of every earlier cache (as ``TeacherLogits`` numbers them)."""
    parts, base = [], 0
    for o in offsets:
        parts.append(np.asarray(o[:-1], dtype=np.int64) + base)
        base += int(o[-1])
    return np.concatenate([*parts, np.array([base], dtype=np.int64)])
