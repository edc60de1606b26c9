"""The teacher's logit cache: a memory-mappable ``.npy`` array per split, written in chunks,
atomically and resumably, and tied by a fingerprint to the teacher, tokenizer and data.

Files in the cache directory, for a split ``name``:

    name.npy             (R, C) fp32 or fp16 raw logits, rows in dataset order (np.load(mmap_mode="r"))
    name.texthash.npy    (R, 8) uint8: first 8 bytes of sha256 of each row's text, to line rows up
    name.manifest.json   shape, dtype, label names, fingerprint and its parts, sha256 of name.npy

While writing, ``name.npy.partial`` holds the array and ``name.progress.json`` the chunks done
(with a sha256 per chunk). An interrupted write resumes at the first unfinished chunk, after
checking the finished ones; chunks are scored in a fixed order and composition, so the resumed
file is byte-identical to an uninterrupted one. The final rename happens only when every chunk
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

CACHE_FORMAT = 1
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "merges.txt", "vocab.json", "spm.model", "sentencepiece.bpe.model", "added_tokens.json")


class CacheError(RuntimeError):
    """A logit cache that is missing, stale, truncated, corrupted or does not fit the data."""


def fingerprint_parts(*, teacher_dir: Path, max_length: int, data_files: list[str], split: Split) -> dict:
    """What a cache depends on. Any change to the teacher weights, the tokenizer files, the max
    length, the bytes of the data files, or which rows were taken makes a different fingerprint."""
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
    logits: np.ndarray  # (R, C) memmap
    text_hashes: np.ndarray  # (R, 8) uint8

    def check_rows(self, split: Split) -> None:
        """Raise unless ``split``'s rows are the cached rows, in the same order."""
        if len(split) != len(self.logits):
            raise CacheError(f"{self._path()}: cache has {len(self.logits)} rows, the data has {len(split)}")
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
) -> Path:
    """Score ``split`` chunk by chunk with ``score(start, stop) -> (stop - start, C) float32`` and
    write the cache. Resumes an interrupted write with the same fingerprint; skips the work when
    a complete cache with this fingerprint is already there. Returns the manifest path."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"cache dtype must be float32 or float16, not {dtype!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fingerprint = fingerprint_of(parts)
    final, manifest_path = directory / f"{name}.npy", directory / f"{name}.manifest.json"
    partial, progress_path = directory / f"{name}.npy.partial", directory / f"{name}.progress.json"
    hashes_path = directory / f"{name}.texthash.npy"
    rows = len(split)
    if manifest_path.exists() and final.exists() and hashes_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
            complete = (manifest.get("fingerprint") == fingerprint
                        and file_digest(final) == manifest.get("file_sha256")
                        and np.array_equal(np.load(hashes_path), text_hashes(split)))
        except (OSError, ValueError, EOFError):  # an unreadable manifest or hash file: rebuild
            complete = False
        if complete:
            return manifest_path  # already complete and intact
    layout = {"fingerprint": fingerprint, "rows": rows, "num_labels": num_labels, "dtype": dtype,
              "chunk_rows": chunk_rows}
    chunk_sums: list[str] = []
    if progress_path.exists() and partial.exists():
        progress = json.loads(progress_path.read_text())
        if {k: progress.get(k) for k in layout} == layout:
            array = np.load(partial, mmap_mode="r+")
            for i, expected in enumerate(progress["chunk_sha256"]):
                if _sha256_bytes(array[i * chunk_rows:(i + 1) * chunk_rows]) != expected:
                    break  # this chunk was damaged: redo it and everything after it
                chunk_sums.append(expected)
            del array
    if not chunk_sums:
        np.lib.format.open_memmap(partial, mode="w+", dtype=np.dtype(dtype), shape=(rows, num_labels)).flush()
    array = np.load(partial, mmap_mode="r+")
    n_chunks = (rows + chunk_rows - 1) // chunk_rows
    for i in range(len(chunk_sums), n_chunks):
        start, stop = i * chunk_rows, min(rows, (i + 1) * chunk_rows)
        logits = score(start, stop)
        if logits.shape != (stop - start, num_labels):
            raise CacheError(f"scorer returned {logits.shape} for rows {start}:{stop}, expected "
                             f"{(stop - start, num_labels)}")
        array[start:stop] = logits.astype(dtype)
        array.flush()
        chunk_sums.append(_sha256_bytes(array[start:stop]))
        atomic_write_text(progress_path, json.dumps({**layout, "chunk_sha256": chunk_sums}))
    del array
    hashes_tmp = directory / f".{name}.texthash.tmp.npy"
    np.save(hashes_tmp, text_hashes(split))
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    manifest = {
        "format": CACHE_FORMAT, "name": name, "shape": [rows, num_labels], "dtype": dtype, "rows": rows,
        "label_names": label_names, "source": split.source, "fingerprint": fingerprint, "parts": parts,
        "file_sha256": file_digest(partial), "file_bytes": partial.stat().st_size,
    }
    # the old manifest goes first: a crash between the renames below must not leave it vouching
    # for a mix of old and new files (a reader then sees an unfinished write, and a rerun resumes)
    manifest_path.unlink(missing_ok=True)
    os.replace(hashes_tmp, hashes_path)
    os.replace(partial, final)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    progress_path.unlink()
    return manifest_path


def open_logit_cache(directory: Path, name: str, *, expected_parts: dict | None, verify: bool = True
                     ) -> LogitCache:
    """Open a cache for reading. Refuses (``CacheError``) a missing, unfinished, truncated or
    corrupted cache, and — when ``expected_parts`` is given — one made from another teacher,
    tokenizer or data."""
    directory = Path(directory)
    final, manifest_path = directory / f"{name}.npy", directory / f"{name}.manifest.json"
    if not manifest_path.exists():
        hint = " (an unfinished write is there: rerun the teacher stage to resume it)" if (
            directory / f"{name}.progress.json").exists() else ""
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
    return LogitCache(directory=directory, name=name, manifest=manifest, logits=logits, text_hashes=hashes)
