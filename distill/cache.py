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

A write is described by three values: ``CacheSpec`` (which cache: folder, name, rows, width,
fingerprint parts), ``CacheSettings`` (how: dtype, chunking, time box, the teacher's batch size and
autocast; built from the teacher's config by ``TeacherConfig.cache_settings``) and ``Shard``
(this process's share under torchrun). ``cache_parts`` is the one description of what a
teacher's cache depends on, called by its writer and its reader for both tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distill.config import atomic_write_text
from distill.data import Split, file_digest, text_hashes
from distill.disk import DiskFullError, require_free, reserve
from distill.errors import PipelineError

if TYPE_CHECKING:  # only its fields are read (distill.artifacts imports the data modules this one does)
    from distill.artifacts import ModelInfo
    from distill.tokens import LongText

CACHE_FORMAT = 1
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "merges.txt", "vocab.json", "spm.model", "sentencepiece.bpe.model", "added_tokens.json")
WORD_ROWS = "first sub-token of each kept word"  # a NER cache's parts["rows"]: what its logit rows are
CLS_STATES = "cls per layer"  # a [CLS]-state cache's parts["states"] (distill/scoring.py, cls_states)


class CacheError(RuntimeError, PipelineError):
    """A logit cache that is missing, stale, truncated, corrupted or does not fit the data."""


def fingerprint_parts(*, teacher_dir: Path, max_length: int, data_files: list[str], split: Split,
                      long_text: LongText | None = None, scorer: str = "pytorch") -> dict:
    """What a cache depends on. Any change to the teacher weights, the tokenizer files, the max
    length, how long texts are cut (``long_text``, a distill.tokens.LongText, recorded as its dict; truncate adds
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
        **({"long_text": long_text.to_dict()} if long_text and long_text.mode != "truncate" else {}),
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


def cache_parts(teacher_dir: Path, info: ModelInfo, *, name: str, split: Split, data_files: list[str],
                what: str = "logits") -> dict:
    """The fingerprint parts of the teacher's cache ``name``: what its writer records and what its
    reader expects (one description for both, classification and NER). ``info``: the teacher's
    ``distill.json`` (its max length, how long texts were cut, which scorer made each cache);
    ``split``: the rows as texts (NER: ``distill.ner.sentence_split`` of the sentences);
    ``data_files``: ``distill.scoring.split_files`` of the set. ``what``: ``logits``, or ``cls``
    for the per-layer [CLS] states (always scored by PyTorch). A NER teacher's caches hold one row
    per kept word, and say so in place of the rows' hash (the text hashes still line them up)."""
    if what not in ("logits", "cls"):
        raise ValueError(f"what must be logits or cls, not {what!r}")
    scorer = info.scorers.get(name, "pytorch") if what == "logits" else "pytorch"  # absent: pytorch (older teachers)
    parts = fingerprint_parts(teacher_dir=teacher_dir, max_length=info.max_length, data_files=data_files, split=split,
                              long_text=info.long_text, scorer=scorer)
    if info.task == "ner":
        parts["rows"] = WORD_ROWS
    if what == "cls":
        parts["states"] = CLS_STATES
    return parts


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


@dataclass(frozen=True)
class CacheSettings:
    """How a teacher fills its caches: one value, built from the stage's config in one place
    (``TeacherConfig.cache_settings``) and passed down whole, to the scorer and the writer."""

    dtype: str = "float32"  # storage of the logits: float32 | float16 (uint8: byte records, distill/lm_cache.py)
    chunk_rows: int = 4096  # rows of the split per resumable chunk (ragged: examples, not logit rows)
    max_chunks: int | None = None  # score at most this many chunks per set and process in one call (a time box)
    batch_size: int = 128  # rows per forward pass of the teacher while it scores
    amp: bool = False  # bfloat16 autocast while the teacher scores (CUDA only; ignored on CPU)


@dataclass(frozen=True, eq=False)
class CacheSpec:
    """One cache to write: where, over which rows, how wide its rows are, what its fingerprint covers."""

    directory: Path  # the cache folder (teacher/logits)
    name: str  # the set: train, a transfer set, <name>.cls; its files are <name>.npy, <name>.manifest.json, ...
    split: Split  # the rows, in dataset order (their text hashes; the manifest's rows)
    num_labels: int  # C: values per logit row (uint8 byte records: bytes per record)
    label_names: list[str]  # recorded in the manifest
    parts: dict  # what the cache depends on (cache_parts, fingerprint_parts): hashed into its fingerprint
    row_offsets: np.ndarray | None = None  # ragged: (R + 1,) int64, row r owns logit rows offsets[r]:offsets[r + 1]


@dataclass(frozen=True)
class Shard:
    """This process's share of a sharded write (torchrun): every rank writes the same cache."""

    rank: int = 0  # this process: it scores chunks rank, rank + world, ...
    world: int = 1  # the processes writing the cache
    barrier: Callable[[], None] = lambda: None  # waits for every rank (dist.barrier); alone, nothing to wait for


@dataclass(frozen=True, eq=False)
class _Write:
    """One call of ``write_logit_cache``: its arguments and what follows from them."""

    cache: CacheSpec
    settings: CacheSettings
    shard: Shard
    offsets: np.ndarray  # (R + 1,) int64 logit-row offsets of the rows: 0..R unless ragged
    fingerprint: str  # fingerprint_of(cache.parts)
    layout: dict  # what a progress file must match for its chunks to count (fingerprint, shape, dtype, chunking)

    @property
    def directory(self) -> Path:
        return Path(self.cache.directory)

    @property
    def name(self) -> str:
        return self.cache.name

    @property
    def ragged(self) -> np.ndarray | None:
        """The offsets of a ragged cache (what its manifest and offsets file record); None otherwise."""
        return self.offsets if self.cache.row_offsets is not None else None

    @property
    def final(self) -> Path:
        return self.directory / f"{self.name}.npy"

    @property
    def manifest_path(self) -> Path:
        return self.directory / f"{self.name}.manifest.json"

    @property
    def partial(self) -> Path:
        return self.directory / f"{self.name}.npy.partial"

    @property
    def hashes_path(self) -> Path:
        return self.directory / f"{self.name}.texthash.npy"

    @property
    def n_chunks(self) -> int:
        return (len(self.cache.split) + self.settings.chunk_rows - 1) // self.settings.chunk_rows

    def rows_of(self, chunk: int) -> tuple[int, int]:
        """(start, stop): chunk ``chunk``'s rows of the split."""
        size = self.settings.chunk_rows
        return chunk * size, min(len(self.cache.split), (chunk + 1) * size)


def write_logit_cache(score: Callable[[int, int], np.ndarray], *, cache: CacheSpec, settings: CacheSettings,
                      shard: Shard = Shard()) -> Path | None:
    """Score ``cache.split`` chunk by chunk with ``score(start, stop) -> (stop - start, C) float32``
    and write the cache. Resumes an interrupted write with the same fingerprint; skips the work
    when a complete cache with this fingerprint is already there. Returns the manifest path.

    Sharded (``shard.world`` > 1, every rank calls this with the same cache and settings and a
    ``shard.barrier`` that waits for all of them): rank r scores chunks r, r + world, ... into the
    shared ``.partial`` memory map (disjoint rows) and records them in its own progress file; rank
    0 then checks that every chunk is in and installs the cache. Each chunk is scored in a fixed
    composition, so the result does not depend on the number of processes (byte-identical at
    equal thread counts).

    ``settings.max_chunks``: score at most this many chunks in this call (a time box); when chunks
    are left, the partial write stays resumable and None is returned.

    ``cache.row_offsets`` (a ragged cache, see the module docstring): (R + 1,) int64, row r of the
    split owns logit rows row_offsets[r]:row_offsets[r + 1]; ``chunk_rows`` then counts rows of
    the split, and ``score(start, stop)`` returns (row_offsets[stop] - row_offsets[start], C)."""
    write = _begin(cache, settings, shard)
    if _complete(write):
        return write.manifest_path  # already complete and intact
    done = _open_partial(write)
    _score_chunks(write, score, mine={i: done[i] for i in done if i % shard.world == shard.rank})
    shard.barrier()  # every rank's chunks are in
    if settings.max_chunks is not None and len(_verified_chunks(write)) < write.n_chunks:
        return None  # time-boxed: the rest is scored by the next call
    if shard.rank == 0:
        missing = sorted(set(range(write.n_chunks)) - set(_verified_chunks(write)))
        if missing:
            raise CacheError(f"{write.partial}: chunks {missing[:10]} are missing after scoring (a rank failed?)")
        _install(write)
    shard.barrier()  # no rank reads the cache before it is installed
    return write.manifest_path


def _begin(cache: CacheSpec, settings: CacheSettings, shard: Shard) -> _Write:
    """The write's settings checked, its offsets, fingerprint and layout; the cache folder made."""
    if settings.dtype not in ("float32", "float16", "uint8"):  # uint8: fixed-size byte records (distill/lm_cache.py)
        raise ValueError(f"cache dtype must be float32 or float16 (or uint8 byte records), not {settings.dtype!r}")
    offsets = _offsets(cache.row_offsets, len(cache.split))
    Path(cache.directory).mkdir(parents=True, exist_ok=True)
    fingerprint = fingerprint_of(cache.parts)
    layout = {"fingerprint": fingerprint, "rows": len(cache.split), "num_labels": cache.num_labels,
              "dtype": settings.dtype, "chunk_rows": settings.chunk_rows}
    if cache.row_offsets is not None:
        layout["offsets_sha256"] = _sha256_bytes(offsets)
    return _Write(cache=cache, settings=settings, shard=shard, offsets=offsets, fingerprint=fingerprint, layout=layout)


def _open_partial(write: _Write) -> dict[int, str]:
    """The chunks already in the ``.partial`` (its verified progress); with none, rank 0 starts a
    new ``.partial``. Every rank calls it (two barriers). Returns chunk -> sha256."""
    done = _verified_chunks(write) if write.partial.exists() else {}
    write.shard.barrier()  # every rank has read the progress files before any rank writes
    if write.shard.rank == 0 and not done:  # one rank 0 only: the stage holds the directory's lock (distill/lock.py)
        for old in _progress_files(write.directory, write.name):
            old.unlink()
        _allocate(write.partial, dtype=write.settings.dtype, shape=(int(write.offsets[-1]), write.cache.num_labels))
    write.shard.barrier()  # the .partial exists before any rank maps it
    return done


def _score_chunks(write: _Write, score: Callable[[int, int], np.ndarray], *, mine: dict[int, str]) -> None:
    """Score this rank's chunks not in ``mine`` (chunk -> sha256, this rank's done ones) into the
    ``.partial``, recording each in this rank's progress file as it lands (at most
    ``max_chunks`` new ones)."""
    rank, world, max_chunks = write.shard.rank, write.shard.world, write.settings.max_chunks
    progress_path = write.directory / f"{write.name}.progress.{rank}.json"
    array = np.load(write.partial, mmap_mode="r+")
    new = 0
    for i in range(rank, write.n_chunks, world):
        if i in mine:
            continue
        if max_chunks is not None and new >= max_chunks:
            break
        new += 1
        start, stop = write.rows_of(i)
        first, last = int(write.offsets[start]), int(write.offsets[stop])  # its logit rows (= start, stop unless ragged)
        logits = score(start, stop)
        if logits.shape != (last - first, write.cache.num_labels):
            raise CacheError(f"scorer returned {logits.shape} for rows {start}:{stop}, expected "
                             f"{(last - first, write.cache.num_labels)}")
        array[first:last] = _finite_for_storage(logits, write, first=first)
        array.flush()
        mine[i] = _sha256_bytes(array[first:last])
        atomic_write_text(progress_path, json.dumps({**write.layout, "chunks": {str(k): v for k, v in mine.items()}}))
    del array


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


def _finite_for_storage(scores: np.ndarray, write: _Write, *, first: int) -> np.ndarray:
    """``scores`` (one chunk's logit rows, from logit row ``first`` on) in the stored dtype, or a
    ``CacheError`` naming the first dataset row holding a NaN or an infinity there (a float16 cache
    turns values past 65504 into inf): none of the chunk is written, the chunks before it are kept."""
    dtype = write.settings.dtype
    with np.errstate(over="ignore"):  # an overflow to inf is what the check below reports
        stored = scores.astype(dtype)  # (K, C)
    bad = np.nonzero(~np.isfinite(stored).all(axis=1))[0]  # bad logit rows of the chunk
    if not len(bad):
        return stored
    row = int(np.searchsorted(write.offsets, first + bad[0], side="right")) - 1  # its example (= the row unless ragged)
    overflow = dtype == "float16" and np.isfinite(scores[bad[0]]).all()
    kind = "too large for float16 (use --cache_dtype=float32)" if overflow else "not finite (NaN or inf)"
    raise CacheError(f"{write.final}: set {write.name}: the teacher's scores for row {row} of "
                     f"{write.cache.split.source} are {kind} (rows of its chunk like it: {len(bad)}); none of the "
                     "chunk is cached, the chunks before it are kept")


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


def _complete(write: _Write) -> bool:
    """True when the cache is already installed with this fingerprint, its rows and offsets, intact."""
    if not (write.manifest_path.exists() and write.final.exists() and write.hashes_path.exists()):
        return False
    offsets = write.ragged
    try:
        manifest = json.loads(write.manifest_path.read_text())
        same_offsets = offsets is None or (
            manifest.get("offsets_sha256") == _sha256_bytes(offsets)
            and np.array_equal(np.load(_offsets_path(write.directory, write.name)), offsets))
        return (manifest.get("fingerprint") == write.fingerprint
                and file_digest(write.final) == manifest.get("file_sha256")
                and np.array_equal(np.load(write.hashes_path), text_hashes(write.cache.split)) and same_offsets)
    except (OSError, ValueError, EOFError):  # an unreadable manifest, hash or offsets file: rebuild
        return False


def _progress_files(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"{name}.progress.*.json"))


def _verified_chunks(write: _Write) -> dict[int, str]:
    """Chunks recorded by any rank's progress file (of this layout) whose bytes in the ``.partial``
    still match their sha256; a damaged chunk is left out, so it is scored again."""
    layout, offsets = write.layout, write.offsets
    recorded: dict[int, str] = {}
    for path in _progress_files(write.directory, write.name):
        try:
            progress = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if {k: progress.get(k) for k in layout} == layout:
            recorded.update({int(k): v for k, v in progress.get("chunks", {}).items()})
    if not recorded:
        return {}
    try:
        array = np.load(write.partial, mmap_mode="r")
    except (OSError, ValueError):
        return {}
    chunk, rows = layout["chunk_rows"], layout["rows"]

    def logit_rows(i: int) -> slice:  # chunk i's rows of the array (ragged: its examples' rows)
        return slice(int(offsets[min(i * chunk, rows)]), int(offsets[min((i + 1) * chunk, rows)]))

    good = {i: sha for i, sha in recorded.items() if _sha256_bytes(array[logit_rows(i)]) == sha}
    del array
    return good


def _install(write: _Write) -> None:
    """Swap the finished ``.partial`` in under the final name, with its text hashes (and, ragged,
    its offsets) and manifest."""
    directory, name, split, partial, offsets = write.directory, write.name, write.cache.split, write.partial, write.ragged
    final, manifest_path = write.final, write.manifest_path
    hashes_tmp = directory / f".{name}.texthash.tmp.npy"
    np.save(hashes_tmp, text_hashes(split))
    if offsets is not None:
        np.save(directory / f".{name}.offsets.tmp.npy", offsets)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    rows = len(split)
    manifest = {
        "format": CACHE_FORMAT, "name": name,
        "shape": [rows if offsets is None else int(offsets[-1]), write.cache.num_labels],
        "dtype": write.settings.dtype, "rows": rows,
        "label_names": write.cache.label_names, "source": split.source, "fingerprint": write.fingerprint,
        "parts": write.cache.parts,
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
