"""Tokenised rows as flat arrays: every row's token ids back to back, plus row offsets.

A million rows as Python lists of ints cost gigabytes; as one int32 array and an int64 offset
array they cost 4 bytes a token. ``encode`` tokenises in chunks (memory stays flat in the number
of rows) and, given a ``store`` directory, writes the arrays there and memory-maps them, so a
transfer set of any size is read from disk one batch at a time. A store is reused when its key
(tokenizer files, max length, the rows' text hashes) matches, and rebuilt atomically otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distill.config import atomic_write_text
from distill.data import Split, text_hashes

STORE_FORMAT = 1


@dataclass
class Encoded:
    """Tokenised rows, unpadded; a batch is padded to its own longest row."""

    ids: np.ndarray  # (N_tokens,) int32: row r is ids[offsets[r]:offsets[r + 1]]
    offsets: np.ndarray  # (R + 1,) int64
    type_ids: np.ndarray | None  # (N_tokens,) int8 segment ids, only for sentence pairs (else None: all 0)
    labels: np.ndarray  # (R,) int64, IGNORE_INDEX for rows without a hard label
    pad_token_id: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """(R,) tokens per row."""
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]

    def slice(self, start: int, stop: int) -> Encoded:
        """Rows start:stop as their own ``Encoded`` (views, no copy)."""
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return Encoded(ids=self.ids[a:b], offsets=self.offsets[start:stop + 1] - a,
                       type_ids=None if self.type_ids is None else self.type_ids[a:b],
                       labels=self.labels[start:stop], pad_token_id=self.pad_token_id)

    def with_labels(self, labels: np.ndarray) -> Encoded:
        return Encoded(ids=self.ids, offsets=self.offsets, type_ids=self.type_ids, labels=labels,
                       pad_token_id=self.pad_token_id)

    def batch(self, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """rows: (B,) indices -> input_ids, attention_mask (, token_type_ids): (B, L_max)."""
        lengths = self.offsets[np.asarray(rows) + 1] - self.offsets[rows]
        width = int(lengths.max())
        ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = None if self.type_ids is None else np.zeros((len(rows), width), dtype=np.int64)
        for j, (i, n) in enumerate(zip(rows, lengths, strict=True)):
            a = self.offsets[i]
            ids[j, :n] = self.ids[a:a + n]
            mask[j, :n] = 1
            if types is not None:
                types[j, :n] = self.type_ids[a:a + n]
        out = {"input_ids": ids, "attention_mask": mask} | ({} if types is None else {"token_type_ids": types})
        return {k: torch.from_numpy(v).to(device) for k, v in out.items()}


def concat(parts: list[Encoded]) -> Encoded:
    """Rows of several ``Encoded`` one after the other (in memory)."""
    starts = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
    offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts, strict=True)])
    has_types = [p.type_ids is not None for p in parts]
    if any(has_types) and not all(has_types):
        raise ValueError("cannot concatenate rows with and without segment ids")
    return Encoded(ids=np.concatenate([p.ids for p in parts]), offsets=offsets.astype(np.int64),
                   type_ids=np.concatenate([p.type_ids for p in parts]) if all(has_types) else None,
                   labels=np.concatenate([p.labels for p in parts]), pad_token_id=parts[0].pad_token_id)


def _chunks(split: Split, chunk_rows: int):
    for start in range(0, len(split), chunk_rows):
        stop = min(len(split), start + chunk_rows)
        pairs = None if split.text_pairs is None else split.text_pairs[start:stop]
        yield split.texts[start:stop], pairs


def _tokenise(tokenizer, texts, pairs, max_length: int) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    ids = [np.asarray(x, dtype=np.int32) for x in enc["input_ids"]]
    types = None  # single sentences: every segment id is 0, which is the models' default
    if pairs is not None and "token_type_ids" in enc:
        types = [np.asarray(x, dtype=np.int8) for x in enc["token_type_ids"]]
    return ids, types


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def encode(tokenizer, split: Split, labels: np.ndarray, max_length: int, *, chunk_rows: int = 8192,
           store: Path | None = None) -> Encoded:
    """Tokenise ``split`` (truncating at ``max_length``) chunk by chunk. labels: (R,) int64.
    With ``store``, the arrays are written there (or reused, when the store's key matches) and
    memory-mapped; without it they are built in memory."""
    if store is not None:
        return _encode_to_store(tokenizer, split, labels, max_length, chunk_rows=chunk_rows, store=Path(store))
    ids, types, lengths = [], [], []
    for texts, pairs in _chunks(split, chunk_rows):
        chunk_ids, chunk_types = _tokenise(tokenizer, texts, pairs, max_length)
        ids.append(np.concatenate(chunk_ids) if chunk_ids else np.zeros(0, np.int32))
        lengths += [len(x) for x in chunk_ids]
        if chunk_types is not None:
            types.append(np.concatenate(chunk_types))
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    return Encoded(ids=np.concatenate(ids) if ids else np.zeros(0, np.int32), offsets=offsets,
                   type_ids=np.concatenate(types) if types else None, labels=np.asarray(labels, dtype=np.int64),
                   pad_token_id=pad_id(tokenizer))


def store_key(tokenizer, split: Split, max_length: int) -> str:
    """What a token store depends on: the tokenizer (its vocabulary and settings), the max length
    and the exact rows."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"class": type(tokenizer).__name__, "max_length": max_length,
                              "vocab": len(tokenizer), "pairs": split.text_pairs is not None}).encode())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(text_hashes(split).tobytes())
    return digest.hexdigest()


def _encode_to_store(tokenizer, split: Split, labels: np.ndarray, max_length: int, *, chunk_rows: int,
                     store: Path) -> Encoded:
    key = store_key(tokenizer, split, max_length)
    manifest_path = store / "store.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if manifest.get("key") != key or manifest.get("format") != STORE_FORMAT:
        tmp = store.with_name(store.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        lengths = np.empty(len(split), dtype=np.int64)
        total, row, has_types = 0, 0, False
        with open(tmp / "ids.bin", "wb") as ids_file, open(tmp / "types.bin", "wb") as types_file:
            for texts, pairs in _chunks(split, chunk_rows):
                chunk_ids, chunk_types = _tokenise(tokenizer, texts, pairs, max_length)
                for x in chunk_ids:
                    lengths[row] = len(x)
                    row += 1
                flat = np.concatenate(chunk_ids) if chunk_ids else np.zeros(0, np.int32)
                flat.tofile(ids_file)
                total += len(flat)
                if chunk_types is not None:
                    has_types = True
                    np.concatenate(chunk_types).tofile(types_file)
            for handle in (ids_file, types_file):
                handle.flush()
                os.fsync(handle.fileno())
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        np.save(tmp / "offsets.npy", offsets)
        atomic_write_text(tmp / "store.json", json.dumps({"format": STORE_FORMAT, "key": key, "rows": len(split),
                                                          "tokens": int(total), "types": has_types}))
        if store.exists():
            shutil.rmtree(store)
        os.replace(tmp, store)
        manifest = json.loads(manifest_path.read_text())
    total = manifest["tokens"]
    ids = np.memmap(store / "ids.bin", dtype=np.int32, mode="r", shape=(total,)) if total else np.zeros(0, np.int32)
    types = np.memmap(store / "types.bin", dtype=np.int8, mode="r", shape=(total,)) if manifest["types"] else None
    return Encoded(ids=ids, offsets=np.load(store / "offsets.npy", mmap_mode="r"), type_ids=types,
                   labels=np.asarray(labels, dtype=np.int64), pad_token_id=pad_id(tokenizer))
