"""Text for a causal LM: documents read from a folder of ``.txt`` files or a JSONL / TSV / CSV text
column, split into training and held-out documents, tokenised, and packed into fixed-length blocks
in a memory-mapped token store.

Documents. A folder: every ``*.txt`` file below it (sorted by path) is one document. A ``.jsonl``
file: the ``text_column`` of every line; a ``.tsv`` / ``.csv`` file (header row): that column of
every row; a single ``.txt`` file: every non-empty line. Empty documents are skipped (counted).

The split is by document (``split_documents``): a seeded permutation puts ``heldout_fraction`` of
the documents in held-out, so no held-out block shares a document with a training block. Exact
duplicates (text compared after collapsing whitespace and case) are reported: within the training
documents (kept; ``dedupe=true`` drops the later copies) and between the splits (a held-out
document whose text is also a training document's is dropped from held-out and counted, so the
held-out perplexity is on text the student never saw).

Packing (``pack``): each document's tokens (no special tokens) followed by one separator token
(``doc_separator``: ``auto`` is ``<|endoftext|>`` when the tokenizer has it, SmolLM2's pretraining
separator, else its eos token), all documents back to back, cut into blocks of ``block_length``
tokens; the last incomplete block is dropped (counted). A block is one model input; its positions
0 .. L-2 each predict the next token of the block (L - 1 targets per block).

The store (``TokenStore``): ``ids.bin`` (B * L,) int32 and ``store.json`` (the key: tokenizer
vocabulary, settings, every document's text hash; the counts), written into ``<dir>.tmp`` and
renamed; reused when the key matches, rebuilt otherwise. ``blocks`` memory-maps it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from distill.config import atomic_write_text
from distill.data import Split, file_digest, jsonl_lines
from distill.errors import PipelineError
from distill.tokens import NO_LABEL, Encoded

STORE_FORMAT = 1
TEXT_SUFFIXES = (".jsonl", ".tsv", ".csv", ".txt")


class LMDataError(ValueError, PipelineError):
    """A text source that cannot be read: the message names the file and the problem."""


@dataclass
class LMDataSpec:
    """Where a causal LM's text comes from and how it is cut; distill.json's ``data`` for task lm."""

    path: str  # a folder of .txt files, or a .jsonl / .tsv / .csv / .txt file
    text_column: str = "text"  # the column of a .jsonl / .tsv / .csv file
    block_length: int = 256  # tokens per block (one model input)
    heldout_fraction: float = 0.05  # share of the documents held out (seeded, by document)
    max_documents: int | None = None  # the first N documents of the source (None: all)
    seed: int = 0  # the held-out permutation
    encoding: str = "utf-8"  # of every file
    doc_separator: str = "auto"  # token after each document: auto (<|endoftext|> or eos) or a token string
    dedupe: bool = False  # drop later exact duplicates among the training documents


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def read_documents(spec: LMDataSpec) -> tuple[list[str], list[str], int]:
    """(documents, the files read, empty documents skipped)."""
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise LMDataError(f"{path}: no such file or folder (expected a folder of .txt files or a "
                          f"{'/'.join(TEXT_SUFFIXES)} file)")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise LMDataError(f"{path}: no .txt files in this folder")
        texts = [_read_text(p, spec.encoding) for p in files]
    elif path.suffix in TEXT_SUFFIXES:
        files = [path]
        texts = _read_table(path, spec)
    else:
        raise LMDataError(f"{path}: unknown text source {path.suffix!r} (expected a folder of .txt files or a "
                          f"{'/'.join(TEXT_SUFFIXES)} file)")
    docs = [t for t in texts if t.strip()]
    empty = len(texts) - len(docs)
    if spec.max_documents is not None:
        docs = docs[: spec.max_documents]
    if len(docs) < 2:
        raise LMDataError(f"{path}: {len(docs)} non-empty documents; need at least 2 (training and held-out)")
    return docs, [str(f) for f in files], empty


def _read_text(path: Path, encoding: str) -> str:
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as err:
        raise LMDataError(f"{path}: not {encoding} text (byte {err.start}); set --encoding") from None


def _read_table(path: Path, spec: LMDataSpec) -> list[str]:
    # lines end at "\n" (and "\r\n") only: str.splitlines would also break a document at U+2028,
    # U+0085 or \x0c, which real text holds (distill/data.py jsonl_lines says the same for JSONL)
    text = _read_text(path, spec.encoding)
    if path.suffix == ".txt":
        return [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
    if path.suffix == ".jsonl":
        out = []
        for line in jsonl_lines(text):
            if line.problem:
                raise LMDataError(f"{path}, line {line.line}: {line.problem}")
            row = line.record
            if not isinstance(row, dict) or not isinstance(row.get(spec.text_column), str):
                raise LMDataError(f"{path}, line {line.line}: no string field {spec.text_column!r}")
            out.append(row[spec.text_column])
        return out
    csv.field_size_limit(1 << 30)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix == ".tsv" else ",")
    header = next(reader, None)
    if not header or spec.text_column not in header:
        raise LMDataError(f"{path}, line 1: no column {spec.text_column!r} in the header {header}")
    column = header.index(spec.text_column)
    out = []
    for number, row in enumerate(reader, 2):
        if len(row) != len(header):
            raise LMDataError(f"{path}, row {number}: {len(row)} fields, the header has {len(header)}")
        out.append(row[column])
    return out


@dataclass
class DocumentSplit:
    """Documents on each side of the split, and what was found on the way."""

    train: list[str]
    heldout: list[str]
    report: dict  # counts: documents, empty, duplicates within train, overlap dropped from held-out


def split_documents(docs: list[str], spec: LMDataSpec, *, empty: int = 0) -> DocumentSplit:
    """Seeded split by document; duplicates and overlap counted (see the module docstring)."""
    if not 0 < spec.heldout_fraction < 1:
        raise LMDataError(f"--heldout_fraction={spec.heldout_fraction}: expected a value in (0, 1)")
    order = np.random.default_rng([spec.seed, 3]).permutation(len(docs))
    n_held = max(1, int(round(spec.heldout_fraction * len(docs))))
    held_idx, train_idx = np.sort(order[:n_held]), np.sort(order[n_held:])
    seen: set[str] = set()
    train, duplicates = [], 0
    for i in train_idx:
        key = _normalise(docs[i])
        if key in seen:
            duplicates += 1
            if spec.dedupe:
                continue
        seen.add(key)
        train.append(docs[i])
    heldout = [docs[i] for i in held_idx if _normalise(docs[i]) not in seen]
    overlap = n_held - len(heldout)
    if not heldout or not train:
        raise LMDataError(f"{spec.path}: the split leaves {len(train)} training and {len(heldout)} held-out documents")
    report = {"documents": len(docs), "empty_skipped": empty, "train_documents": len(train),
              "heldout_documents": len(heldout), "train_duplicates": duplicates,
              "train_duplicates_dropped": duplicates if spec.dedupe else 0,
              "heldout_overlap_dropped": overlap}
    return DocumentSplit(train=train, heldout=heldout, report=report)


def separator_id(tokenizer, setting: str) -> int:
    """The token id that follows each document."""
    if setting == "auto":
        vocab = tokenizer.get_vocab()
        if "<|endoftext|>" in vocab:
            return vocab["<|endoftext|>"]
        if tokenizer.eos_token_id is None:
            raise LMDataError("--doc_separator=auto: the tokenizer has neither <|endoftext|> nor an eos token; "
                              "name one with --doc_separator=<token>")
        return int(tokenizer.eos_token_id)
    token = tokenizer.convert_tokens_to_ids(setting)
    if token is None or token == tokenizer.unk_token_id and setting != tokenizer.unk_token:
        raise LMDataError(f"--doc_separator={setting!r}: not a token of the tokenizer")
    return int(token)


def pack(tokenizer, docs: list[str], *, block_length: int, separator: int, chunk: int = 1024) -> tuple[np.ndarray, int]:
    """(blocks (B, L) int32, tokens dropped at the end). Documents' tokens, each followed by
    ``separator``, back to back, cut into blocks of ``block_length``."""
    if block_length < 2:
        raise LMDataError(f"--block_length={block_length}: a block needs at least 2 tokens")
    pieces = []
    for start in range(0, len(docs), chunk):
        ids = tokenizer(docs[start:start + chunk], add_special_tokens=False, return_attention_mask=False,
                        verbose=False)["input_ids"]
        pieces += [np.asarray(row + [separator], dtype=np.int32) for row in ids]
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    blocks = len(flat) // block_length
    return flat[: blocks * block_length].reshape(blocks, block_length), int(len(flat) - blocks * block_length)


def tokenizer_key(tokenizer) -> str:
    digest = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(type(tokenizer).__name__.encode())
    return digest.hexdigest()


@dataclass
class TokenStore:
    """One split's blocks, memory-mapped."""

    directory: Path
    blocks: np.ndarray  # (B, L) int32 memmap
    manifest: dict

    def __len__(self) -> int:
        return len(self.blocks)

    def encoded(self, pad_token_id: int) -> Encoded:
        """The blocks as trainer rows: every row L tokens, no labels (the targets are the tokens)."""
        n, length = self.blocks.shape
        return Encoded(ids=self.blocks.reshape(-1), offsets=np.arange(n + 1, dtype=np.int64) * length, type_ids=None,
                       labels=np.full(n, NO_LABEL, dtype=np.int64), pad_token_id=pad_token_id)

    def as_split(self) -> Split:
        """The blocks as a label-free ``Split`` whose texts are their token ids (hex): what the
        teacher cache's fingerprint and row hashes read."""
        return Split(texts=[row.tobytes().hex() for row in np.asarray(self.blocks)], labels=None,
                     source=str(self.directory))


def build_store(tokenizer, docs: list[str], directory: Path, *, spec: LMDataSpec, name: str) -> TokenStore:
    """Pack ``docs`` into ``directory`` (reused when its key matches), memory-mapped."""
    directory = Path(directory)
    separator = separator_id(tokenizer, spec.doc_separator)
    key_parts = {"format": STORE_FORMAT, "tokenizer": tokenizer_key(tokenizer), "block_length": spec.block_length,
                 "separator": separator, "docs": hashlib.sha256("\x1e".join(docs).encode()).hexdigest()}
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()
    manifest_path = directory / "store.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if manifest.get("key") != key:
        blocks, dropped = pack(tokenizer, docs, block_length=spec.block_length, separator=separator)
        if len(blocks) == 0:
            raise LMDataError(f"{spec.path}: the {name} documents make {dropped} tokens, fewer than one block of "
                              f"{spec.block_length}; lower --block_length")
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with open(tmp / "ids.bin", "wb") as handle:
            blocks.tofile(handle)
            handle.flush()
            os.fsync(handle.fileno())
        manifest = {"key": key, "name": name, "blocks": int(len(blocks)), "block_length": spec.block_length,
                    "tokens": int(blocks.size), "documents": len(docs), "tokens_dropped": dropped,
                    "separator": separator, "ids_sha256": file_digest(tmp / "ids.bin")}
        atomic_write_text(tmp / "store.json", json.dumps(manifest, indent=1) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    blocks = np.memmap(directory / "ids.bin", dtype=np.int32, mode="r",
                       shape=(manifest["blocks"], manifest["block_length"]))
    return TokenStore(directory=directory, blocks=blocks, manifest=manifest)


@dataclass
class LMData:
    """The two splits' stores and what splitting found."""

    train: TokenStore
    heldout: TokenStore
    report: dict
    files: list[str]


def load_lm_data(spec: LMDataSpec, tokenizer, store_dir: Path) -> LMData:
    """Read, split, tokenise and pack ``spec``'s text into ``store_dir/{train,heldout}``."""
    docs, files, empty = read_documents(spec)
    split = split_documents(docs, spec, empty=empty)
    train = build_store(tokenizer, split.train, Path(store_dir) / "train", spec=spec, name="train")
    heldout = build_store(tokenizer, split.heldout, Path(store_dir) / "heldout", spec=spec, name="held-out")
    report = {**split.report, "train_blocks": len(train), "heldout_blocks": len(heldout),
              "train_tokens": train.manifest["tokens"], "heldout_tokens": heldout.manifest["tokens"],
              "block_length": spec.block_length, "separator_id": train.manifest["separator"]}
    return LMData(train=train, heldout=heldout, report=report, files=files)


def data_lines(report: dict) -> list[str]:
    """The stages' one-paragraph account of the data."""
    return [f"data: {report['documents']:,} documents ({report['empty_skipped']} empty skipped) -> "
            f"{report['train_documents']:,} training, {report['heldout_documents']:,} held-out; "
            f"{report['train_blocks']:,} training blocks ({report['train_tokens']:,} tokens), "
            f"{report['heldout_blocks']:,} held-out blocks ({report['heldout_tokens']:,} tokens) of "
            f"{report['block_length']}",
            f"data: {report['train_duplicates']} exact duplicates among the training documents "
            f"({report['train_duplicates_dropped']} dropped); {report['heldout_overlap_dropped']} held-out documents "
            "were also training documents (dropped from held-out)"]


def spec_dict(spec: LMDataSpec) -> dict:
    return asdict(spec)
