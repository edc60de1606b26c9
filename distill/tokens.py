"""Tokenised rows as flat arrays: every row's token ids back to back, plus row offsets.

A million rows as Python lists of ints cost gigabytes; as one int32 array and an int64 offset
array they cost 4 bytes a token. ``encode`` tokenises in chunks (memory stays flat in the number
of rows) and, given a ``store`` directory, writes the arrays there and memory-maps them, so a
transfer set of any size is read from disk one batch at a time. A store is reused when its key
(tokenizer files, max length, long-text settings, the rows' text hashes) matches, and rebuilt
atomically otherwise.

Texts longer than ``max_length`` tokens (``LongText``; every stage tokenises through ``encode``,
so training, scoring, export, bench and predict see the same input):

    truncate   keep the head: the tokenizer's own truncation (pairs: its longest_first)
    head_tail  keep the first ``head_tokens`` and the last (budget - head_tokens) text tokens, the
               special tokens added around them by the tokenizer (Sun et al. 2019, "How to
               Fine-Tune BERT for Text Classification": 128 head + 382 tail of BERT's 510 text
               tokens was best on IMDB; the default head, a quarter of the budget, is their ratio)
    chunks     split the text into consecutive pieces of at most max_length tokens (special tokens
               included), ``chunk_overlap`` tokens shared by neighbours. A document becomes K rows;
               ``Encoded.groups`` says which document each row belongs to, and the document's
               logits are the mean of its rows' logits (``mean_per_document``)

head_tail and chunks take single texts; sentence pairs are refused with one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distill.config import ConfigError, atomic_write_text
from distill.data import Split, text_hashes

if TYPE_CHECKING:  # torch is imported where a batch becomes tensors (predict and bench run without it)
    import torch

STORE_FORMAT = 2
LONG_TEXT_MODES = ("truncate", "head_tail", "chunks")
NO_LABEL = -100  # the label of rows encoded without labels (= distill.kd_defaults.IGNORE_INDEX, which imports torch)


@dataclass(frozen=True)
class LongText:
    """What becomes of a text longer than max_length tokens (see the module docstring)."""

    mode: str = "truncate"  # truncate | head_tail | chunks
    head_tokens: int | None = None  # head_tail: text tokens kept from the start (None: a quarter of the budget)
    chunk_overlap: int = 0  # chunks: text tokens each chunk shares with the one before

    @classmethod
    def from_dict(cls, raw: dict | None) -> LongText:
        """From distill.json's ``long_text`` ({} or missing, as older files have it: truncate)."""
        return cls(**(raw or {}))

    def to_dict(self) -> dict:
        return asdict(self)

    def effect(self, tokenizer, max_length: int, train: Encoded, dev: Encoded) -> str:
        """What becomes of the long rows, in words (for the stages' data line)."""
        if self.mode == "head_tail":
            head, tail = self.head_tail_split(text_budget(tokenizer, max_length))
            return f"long_text=head_tail keeps their first {head} and last {tail} text tokens"
        if self.mode == "chunks":
            return (f"long_text=chunks splits them into rows of at most {max_length} tokens, overlap "
                    f"{self.chunk_overlap}: {len(train):,} train rows from {train.documents:,} texts, "
                    f"{len(dev):,} dev rows from {dev.documents:,}")
        return "long_text=truncate cuts them"

    def head_tail_split(self, budget: int) -> tuple[int, int]:
        """(head, tail) text tokens kept of a long text, ``budget`` text tokens in all."""
        head = budget // 4 if self.head_tokens is None else self.head_tokens
        return head, budget - head

    def check(self, tokenizer, max_length: int, *, pairs: bool) -> None:
        """Raise ``ConfigError`` (one line) for settings that cannot work."""
        if self.mode not in LONG_TEXT_MODES:
            raise ConfigError(f"--long_text={self.mode}: expected one of {', '.join(LONG_TEXT_MODES)}")
        if self.mode == "truncate":
            return
        if pairs:
            raise ConfigError(f"--long_text={self.mode}: takes single texts; this data has sentence pairs "
                              "(use --long_text=truncate, the tokenizer's own longest_first truncation)")
        budget = text_budget(tokenizer, max_length)
        if budget < 1:
            raise ConfigError(f"--max_length={max_length}: leaves no room for text beside the special tokens")
        if self.mode == "head_tail" and self.head_tokens is not None and not 0 <= self.head_tokens <= budget:
            raise ConfigError(f"--head_tokens={self.head_tokens}: expected 0..{budget} (max_length {max_length} "
                              f"less {max_length - budget} special tokens)")
        if self.mode == "chunks" and not 0 <= self.chunk_overlap < budget:
            raise ConfigError(f"--chunk_overlap={self.chunk_overlap}: expected 0..{budget - 1} (less than the "
                              f"{budget} text tokens of a chunk)")


def text_budget(tokenizer, max_length: int) -> int:
    """Text tokens a row of ``max_length`` holds beside the special tokens of a single text."""
    return max_length - tokenizer.num_special_tokens_to_add(pair=False)


def mean_per_document(row_logits: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """(D, C) float32: each document's mean over its rows. row_logits: (R, C); groups: (R,) the
    document of each row, non-decreasing, every document with at least one row (None: R == D)."""
    if groups is None:
        return row_logits
    if len(groups) == 0:
        return np.zeros((0, row_logits.shape[1]), dtype=np.float32)
    starts = np.flatnonzero(np.r_[True, np.diff(groups) != 0])  # (D,) first row of each document
    sums = np.add.reduceat(row_logits.astype(np.float64), starts, axis=0)  # (D, C)
    counts = np.diff(np.r_[starts, len(groups)])  # (D,)
    return (sums / counts[:, None]).astype(np.float32)


@dataclass
class Encoded:
    """Tokenised rows, unpadded; a batch is padded to its own longest row. A row is one model
    input; with ``long_text=chunks`` a document (a row of the split) spans several rows."""

    ids: np.ndarray  # (N_tokens,) int32: row r is ids[offsets[r]:offsets[r + 1]]
    offsets: np.ndarray  # (R + 1,) int64
    type_ids: np.ndarray | None  # (N_tokens,) int8 segment ids, only for sentence pairs (else None: all 0)
    labels: np.ndarray  # (R,) int64 per row (a chunk carries its document's), IGNORE_INDEX without a hard label
    pad_token_id: int
    groups: np.ndarray | None = None  # (R,) int64 document of each row, non-decreasing (chunks); None: row r is document r
    source_lengths: np.ndarray | None = None  # (D,) int64 tokens per document before any cut, special tokens included

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def documents(self) -> int:
        """D: the documents the rows come from."""
        if self.groups is None:
            return len(self)
        return int(self.groups[-1]) + 1 if len(self.groups) else 0

    @property
    def lengths(self) -> np.ndarray:
        """(R,) tokens per row."""
        return np.diff(self.offsets)

    @property
    def document_labels(self) -> np.ndarray:
        """(D,) int64 each document's label (its first row's)."""
        if self.groups is None:
            return self.labels
        return self.labels[np.searchsorted(self.groups, np.arange(self.documents))]

    def document_logits(self, row_logits: np.ndarray) -> np.ndarray:
        """(R, C) logits of the rows -> (D, C) per document (chunks: the mean of its rows')."""
        return mean_per_document(row_logits, self.groups)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]

    def slice(self, start: int, stop: int) -> Encoded:
        """Rows start:stop as their own ``Encoded`` (views, no copy; documents renumbered from 0).
        Cut at document boundaries to keep documents whole."""
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        groups, lengths = None, None
        if self.groups is not None:
            groups = self.groups[start:stop] - (self.groups[start] if stop > start else 0)
            first = int(self.groups[start]) if stop > start else 0
            docs = slice(first, first + (int(groups[-1]) + 1 if len(groups) else 0))
        else:
            docs = slice(start, stop)
        if self.source_lengths is not None:
            lengths = self.source_lengths[docs]
        return Encoded(ids=self.ids[a:b], offsets=self.offsets[start:stop + 1] - a,
                       type_ids=None if self.type_ids is None else self.type_ids[a:b],
                       labels=self.labels[start:stop], pad_token_id=self.pad_token_id, groups=groups,
                       source_lengths=lengths)

    def with_labels(self, labels: np.ndarray) -> Encoded:
        """The same rows with other labels: (R,) per row."""
        return Encoded(ids=self.ids, offsets=self.offsets, type_ids=self.type_ids, labels=labels,
                       pad_token_id=self.pad_token_id, groups=self.groups, source_lengths=self.source_lengths)

    def arrays(self, rows: np.ndarray, *, type_ids: bool = False, width: int | None = None) -> dict[str, np.ndarray]:
        """rows: (B,) indices -> input_ids, attention_mask (, token_type_ids): (B, L) int64 numpy,
        L the longest row's length (or ``width``). ``type_ids``: always include token_type_ids
        (zeros for single texts), for runtimes whose graph takes them as an input."""
        rows = np.asarray(rows)
        lengths = self.offsets[rows + 1] - self.offsets[rows]
        width = int(lengths.max()) if width is None else width
        ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64) if type_ids or self.type_ids is not None else None
        for j, (i, n) in enumerate(zip(rows, lengths, strict=True)):
            a = self.offsets[i]
            ids[j, :n] = self.ids[a:a + n]
            mask[j, :n] = 1
            if self.type_ids is not None:
                types[j, :n] = self.type_ids[a:a + n]
        return {"input_ids": ids, "attention_mask": mask} | ({} if types is None else {"token_type_ids": types})

    def batch(self, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """rows: (B,) indices -> input_ids, attention_mask (, token_type_ids): (B, L_max) tensors."""
        import torch

        return {k: torch.from_numpy(v).to(device) for k, v in self.arrays(rows).items()}


def concat(parts: list[Encoded]) -> Encoded:
    """Rows of several ``Encoded`` one after the other (in memory); documents renumbered."""
    starts = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
    offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts, strict=True)])
    has_types = [p.type_ids is not None for p in parts]
    if any(has_types) and not all(has_types):
        raise ValueError("cannot concatenate rows with and without segment ids")
    groups = None
    if any(p.groups is not None for p in parts):
        first_doc = np.cumsum([0] + [p.documents for p in parts[:-1]])
        groups = np.concatenate([(np.arange(len(p)) if p.groups is None else np.asarray(p.groups)) + d
                                 for p, d in zip(parts, first_doc, strict=True)]).astype(np.int64)
    lengths = None
    if all(p.source_lengths is not None for p in parts):
        lengths = np.concatenate([p.source_lengths for p in parts]).astype(np.int64)
    return Encoded(ids=np.concatenate([p.ids for p in parts]), offsets=offsets.astype(np.int64),
                   type_ids=np.concatenate([p.type_ids for p in parts]) if all(has_types) else None,
                   labels=np.concatenate([p.labels for p in parts]), pad_token_id=parts[0].pad_token_id,
                   groups=groups, source_lengths=lengths)


def _chunks(split: Split, chunk_rows: int):
    for start in range(0, len(split), chunk_rows):
        stop = min(len(split), start + chunk_rows)
        pairs = None if split.text_pairs is None else split.text_pairs[start:stop]
        yield split.texts[start:stop], pairs


@dataclass
class _Piece:
    """The rows of one chunk of documents."""

    ids: list[np.ndarray]  # (R_c,) each (L_r,) int32, special tokens included
    types: list[np.ndarray] | None  # (R_c,) each (L_r,) int8 segment ids (pairs), else None
    rows_per_doc: list[int]  # (D_c,) rows each document became
    source_lengths: list[int]  # (D_c,) tokens of each document before any cut


def _truncate(tokenizer, texts, pairs, max_length: int) -> _Piece:
    # one untruncated call (its lengths are the documents' full lengths); only the rows over
    # max_length are tokenised again with the tokenizer's own truncation
    # segment ids: single texts need none (all 0, the models' default); pairs get the tokenizer's own
    want_types = None if pairs is not None else False
    full = tokenizer(texts, pairs, truncation=False, return_attention_mask=False,
                     return_token_type_ids=want_types, verbose=False)
    ids = list(full["input_ids"])
    types = list(full["token_type_ids"]) if pairs is not None and "token_type_ids" in full else None
    lengths = [len(x) for x in ids]
    long = [i for i, n in enumerate(lengths) if n > max_length]
    if long:
        cut = tokenizer([texts[i] for i in long], None if pairs is None else [pairs[i] for i in long],
                        truncation=True, max_length=max_length, return_attention_mask=False,
                        return_token_type_ids=want_types)
        for j, i in enumerate(long):
            ids[i] = cut["input_ids"][j]
            if types is not None:
                types[i] = cut["token_type_ids"][j]
    return _Piece(ids=[np.asarray(x, dtype=np.int32) for x in ids],
                  types=None if types is None else [np.asarray(x, dtype=np.int8) for x in types],
                  rows_per_doc=[1] * len(ids), source_lengths=lengths)


def _head_tail_or_chunks(tokenizer, texts, max_length: int, long_text: LongText) -> _Piece:
    # text tokens without special tokens and without truncation; cut in token space; the special
    # tokens put back around each piece by the tokenizer's own build_inputs_with_special_tokens
    content = tokenizer(texts, add_special_tokens=False, truncation=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)["input_ids"]
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    budget = max_length - specials
    head, tail = long_text.head_tail_split(budget)
    step = budget - long_text.chunk_overlap
    ids, rows_per_doc, lengths = [], [], []
    for tokens in content:
        if long_text.mode == "head_tail":
            pieces = [tokens if len(tokens) <= budget else tokens[:head] + tokens[len(tokens) - tail:]]
        else:  # chunks: [k * step, k * step + budget) until a chunk reaches the end
            pieces = [tokens[s:s + budget] for s in range(0, max(len(tokens) - long_text.chunk_overlap, 1), step)]
        ids += [np.asarray(tokenizer.build_inputs_with_special_tokens(p), dtype=np.int32) for p in pieces]
        rows_per_doc.append(len(pieces))
        lengths.append(len(tokens) + specials)
    return _Piece(ids=ids, types=None, rows_per_doc=rows_per_doc, source_lengths=lengths)


def _pieces(tokenizer, split: Split, max_length: int, long_text: LongText, chunk_rows: int) -> Iterator[_Piece]:
    long_text.check(tokenizer, max_length, pairs=split.text_pairs is not None)
    for texts, pairs in _chunks(split, chunk_rows):
        if long_text.mode == "truncate":
            yield _truncate(tokenizer, texts, pairs, max_length)
        else:
            yield _head_tail_or_chunks(tokenizer, texts, max_length, long_text)


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _row_labels(labels: np.ndarray | None, documents: int, groups: np.ndarray | None) -> np.ndarray:
    labels = np.full(documents, NO_LABEL, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return labels if groups is None else labels[groups]


def encode(tokenizer, split: Split, labels: np.ndarray | None, max_length: int, *, long_text: LongText | None = None,
           chunk_rows: int = 8192, store: Path | None = None) -> Encoded:
    """Tokenise ``split`` chunk by chunk, each text cut to ``max_length`` tokens as ``long_text``
    says (default: truncate). labels: (D,) int64 per document (None: no labels); a chunk row gets
    its document's. With ``store``, the arrays are written there (or reused, when the store's key
    matches) and memory-mapped; without it they are built in memory."""
    long_text = long_text or LongText()
    if store is not None:
        return _encode_to_store(tokenizer, split, labels, max_length, long_text, chunk_rows=chunk_rows,
                                store=Path(store))
    ids, types, lengths, rows_per_doc, source_lengths = [], [], [], [], []
    for piece in _pieces(tokenizer, split, max_length, long_text, chunk_rows):
        ids.append(np.concatenate(piece.ids) if piece.ids else np.zeros(0, np.int32))
        lengths += [len(x) for x in piece.ids]
        rows_per_doc += piece.rows_per_doc
        source_lengths += piece.source_lengths
        if piece.types is not None:
            types.append(np.concatenate(piece.types))
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    groups = _groups(long_text, rows_per_doc)
    return Encoded(ids=np.concatenate(ids) if ids else np.zeros(0, np.int32), offsets=offsets,
                   type_ids=np.concatenate(types) if types else None,
                   labels=_row_labels(labels, len(split), groups), pad_token_id=pad_id(tokenizer), groups=groups,
                   source_lengths=np.asarray(source_lengths, dtype=np.int64))


def _groups(long_text: LongText, rows_per_doc: list[int]) -> np.ndarray | None:
    """(R,) int64 document of each row under chunks; None otherwise (one row per document)."""
    if long_text.mode != "chunks":
        return None
    return np.repeat(np.arange(len(rows_per_doc), dtype=np.int64), rows_per_doc)


def store_key(tokenizer, split: Split, max_length: int, long_text: LongText | None = None) -> str:
    """What a token store depends on: the tokenizer (its vocabulary and settings), the max length,
    the long-text settings and the exact rows."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"class": type(tokenizer).__name__, "max_length": max_length,
                              "vocab": len(tokenizer), "pairs": split.text_pairs is not None,
                              "long_text": (long_text or LongText()).to_dict()}).encode())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(text_hashes(split).tobytes())
    return digest.hexdigest()


def _encode_to_store(tokenizer, split: Split, labels: np.ndarray | None, max_length: int, long_text: LongText, *,
                     chunk_rows: int, store: Path) -> Encoded:
    key = store_key(tokenizer, split, max_length, long_text)
    manifest_path = store / "store.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if manifest.get("key") != key or manifest.get("format") != STORE_FORMAT:
        tmp = store.with_name(store.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        lengths, rows_per_doc, source_lengths = [], [], []
        total, has_types = 0, False
        with open(tmp / "ids.bin", "wb") as ids_file, open(tmp / "types.bin", "wb") as types_file:
            for piece in _pieces(tokenizer, split, max_length, long_text, chunk_rows):
                lengths += [len(x) for x in piece.ids]
                rows_per_doc += piece.rows_per_doc
                source_lengths += piece.source_lengths
                flat = np.concatenate(piece.ids) if piece.ids else np.zeros(0, np.int32)
                flat.tofile(ids_file)
                total += len(flat)
                if piece.types is not None:
                    has_types = True
                    np.concatenate(piece.types).tofile(types_file)
            for handle in (ids_file, types_file):
                handle.flush()
                os.fsync(handle.fileno())
        np.save(tmp / "offsets.npy", np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64))
        np.save(tmp / "source_lengths.npy", np.asarray(source_lengths, dtype=np.int64))
        groups = _groups(long_text, rows_per_doc)
        if groups is not None:
            np.save(tmp / "groups.npy", groups)
        atomic_write_text(tmp / "store.json", json.dumps({"format": STORE_FORMAT, "key": key, "rows": len(lengths),
                                                          "documents": len(split), "tokens": int(total),
                                                          "types": has_types, "groups": groups is not None}))
        if store.exists():
            shutil.rmtree(store)
        os.replace(tmp, store)
        manifest = json.loads(manifest_path.read_text())
    total = manifest["tokens"]
    ids = np.memmap(store / "ids.bin", dtype=np.int32, mode="r", shape=(total,)) if total else np.zeros(0, np.int32)
    types = np.memmap(store / "types.bin", dtype=np.int8, mode="r", shape=(total,)) if manifest["types"] else None
    groups = np.load(store / "groups.npy") if manifest["groups"] else None
    return Encoded(ids=ids, offsets=np.load(store / "offsets.npy", mmap_mode="r"), type_ids=types,
                   labels=_row_labels(labels, len(split), groups), pad_token_id=pad_id(tokenizer), groups=groups,
                   source_lengths=np.load(store / "source_lengths.npy"))
