"""Datasets: a local directory (TSV / CSV / JSONL splits, or a folder per class) or a hub name.

A dataset directory holds a ``train`` split and a ``dev`` (or ``validation``) split, each as
``<split>.tsv``, ``<split>.csv`` or ``<split>.jsonl``, or as ``<split>/<label>/*.txt``.
The label map is derived from the training split (sorted label values) and travels with every
model as ``id2label`` / ``label2id``. Every problem with the input raises ``DataError`` naming
the file, the line where there is one, and what is wrong.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation")}
TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl")


class DataError(ValueError):
    """Bad input data: the message names the file, the line (when there is one) and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


@dataclass
class Split:
    """One split, rows in file order. ``labels`` are raw label strings (None: unlabeled)."""

    texts: list[str]  # (R,)
    labels: list[str] | None  # (R,) raw labels as strings, or None for unlabeled text
    source: str  # the file or folder the rows came from
    text_pairs: list[str] | None = None  # (R,) second sentence for pair tasks, else None
    line_numbers: list[int] = field(default_factory=list)  # (R,) line of each row in source

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: np.ndarray) -> Split:
        pick = [int(i) for i in indices]
        return Split(
            texts=[self.texts[i] for i in pick],
            labels=None if self.labels is None else [self.labels[i] for i in pick],
            source=self.source,
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in pick],
            line_numbers=[self.line_numbers[i] for i in pick] if self.line_numbers else [],
        )


@dataclass
class LabelMap:
    """Label strings <-> contiguous ids, derived from the training split."""

    names: list[str]  # id -> label string

    @classmethod
    def from_labels(cls, labels: list[str], source: str) -> LabelMap:
        values = sorted(set(labels), key=_label_sort_key)
        if len(values) < 2:
            raise DataError(source, f"only one class ({values!r}) in the training split; need at least 2")
        return cls(names=values)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def encode(self, split: Split) -> np.ndarray:
        """(R,) int64 label ids; a label the training split never saw is an error."""
        assert split.labels is not None
        to_id = self.label2id
        ids = np.empty(len(split), dtype=np.int64)
        for row, label in enumerate(split.labels):
            if label not in to_id:
                line = split.line_numbers[row] if split.line_numbers else None
                raise DataError(
                    split.source, f"label {label!r} never appears in the training split "
                    f"(known labels: {', '.join(self.names)})", line,
                )
            ids[row] = to_id[label]
        return ids


@dataclass
class Dataset:
    train: Split
    dev: Split
    label_map: LabelMap
    files: list[str]  # every file the splits were read from, for fingerprints


@dataclass
class DataSpec:
    """Where the data is and which columns to read."""

    path: str  # a dataset directory, or a hub dataset name (needs network)
    text_column: str = "text"  # column with the input text
    text_pair_column: str | None = None  # second text column for sentence-pair tasks
    label_column: str = "label"  # column with the label (string or int)
    max_train_rows: int | None = None  # random subset of the training split (None: all rows)
    seed: int = 0  # seed of that subset


def _label_sort_key(label: str) -> tuple[int, int, str]:
    # integer-looking labels sort numerically ("2" < "10"), others lexically, ints first; the
    # string breaks ties ("01" vs "1") so the order never depends on set iteration order
    try:
        return (0, int(label), label)
    except ValueError:
        return (1, 0, label)


def _normalise_label(value: object, path: Path, line: int) -> str:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise DataError(path, "empty label", line)
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _check_text(value: object, column: str, path: Path, line: int) -> str:
    if value is None or not isinstance(value, str | int | float):
        raise DataError(path, f"column {column!r} is missing or not text", line)
    text = str(value)
    if text.strip() == "":
        raise DataError(path, f"empty text in column {column!r}", line)
    return text


def _read_bytes_as_text(path: Path) -> str:
    if not path.exists():
        raise DataError(path, "file not found")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(path, "file is empty")
    # strip the BOM ourselves (not "utf-8-sig") so that error offsets count the file's own bytes
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = bom + err.start
        line = raw[:at].count(b"\n") + 1
        raise DataError(path, f"bytes that are not UTF-8 at byte {at}", line) from err


def _read_records(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) pairs from a TSV, CSV or JSONL file."""
    text = _read_bytes_as_text(path)
    records: list[tuple[int, dict]] = []
    if path.suffix == ".jsonl":
        # split on "\n" only: str.splitlines also breaks at U+2028, U+0085, \x0c ..., which
        # JSON strings may hold raw (json.dumps(..., ensure_ascii=False) writes them)
        for line_no, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(path, f"not valid JSON ({err.msg})", line_no) from err
            if not isinstance(record, dict):
                raise DataError(path, "each line must be a JSON object", line_no)
            records.append((line_no, record))
        if not records:
            raise DataError(path, "no rows")
        return records

    delimiter = "\t" if path.suffix == ".tsv" else ","
    # TSV as GLUE writes it: no quoting (sentences contain bare quotes); CSV: standard quoting
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    # a stream with newline="" (not str.splitlines): quoted fields keep their line breaks, only
    # \r / \n end a row, and reader.line_num counts the file's physical lines
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise DataError(path, f"unreadable {kind} header ({err})", 1) from err
    if not header or not any(h.strip() for h in header):
        raise DataError(path, "missing header row", 1)
    header = [h.strip() for h in header]
    while True:
        line_no = reader.line_num + 1  # where the next row starts (a quoted field may span lines)
        try:
            fields = next(reader, None)
        except csv.Error as err:
            raise DataError(path, f"unreadable {kind} row ({err})", line_no) from err
        if fields is None:
            break
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) != len(header):
            raise DataError(
                path, f"expected {len(header)} fields ({', '.join(header)}), found {len(fields)}", line_no
            )
        records.append((line_no, dict(zip(header, fields, strict=True))))
    if not records:
        raise DataError(path, "no rows after the header")
    return records


def _split_from_records(
    path: Path, records: list[tuple[int, dict]], spec: DataSpec, *, labelled: bool, text_column: str
) -> Split:
    columns = [text_column] + ([spec.text_pair_column] if spec.text_pair_column else [])
    if labelled:
        columns.append(spec.label_column)
    first_line, first = records[0]
    for column in columns:
        if column not in first:
            raise DataError(path, f"missing column {column!r} (found: {', '.join(map(str, first))})", first_line)
    texts, pairs, labels, lines = [], [] if spec.text_pair_column else None, [] if labelled else None, []
    for line_no, record in records:
        texts.append(_check_text(record.get(text_column), text_column, path, line_no))
        if pairs is not None:
            pairs.append(_check_text(record.get(spec.text_pair_column), spec.text_pair_column, path, line_no))
        if labels is not None:
            labels.append(_normalise_label(record.get(spec.label_column), path, line_no))
        lines.append(line_no)
    return Split(texts=texts, labels=labels, source=str(path), text_pairs=pairs, line_numbers=lines)


def _read_class_folders(folder: Path) -> tuple[Split, list[str]]:
    """``folder/<label>/*.txt``: one example per file, the label is the folder name."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(folder, "no class sub-folders (expected <split>/<label>/*.txt)")
    texts, labels, files = [], [], []
    for class_dir in class_dirs:
        for file in sorted(class_dir.glob("*.txt")):
            texts.append(_check_text(_read_bytes_as_text(file).strip(), "text", file, 1))
            labels.append(class_dir.name)
            files.append(str(file))
    if not texts:
        raise DataError(folder, "no .txt files under the class folders")
    return Split(texts=texts, labels=labels, source=str(folder), line_numbers=[]), files


def find_split(directory: Path, split: str) -> Path:
    """The file (or class folder) holding ``split`` in ``directory``."""
    found = [
        directory / f"{name}{suffix}"
        for name in SPLIT_NAMES[split]
        for suffix in TABLE_SUFFIXES
        if (directory / f"{name}{suffix}").is_file()
    ]
    found += [directory / name for name in SPLIT_NAMES[split] if (directory / name).is_dir()]
    if not found:
        wanted = " or ".join(f"{n}{{{','.join(TABLE_SUFFIXES)}}}" for n in SPLIT_NAMES[split])
        raise DataError(directory, f"no {split} split: expected {wanted} or a {SPLIT_NAMES[split][0]}/ class folder")
    if len(found) > 1:
        raise DataError(directory, f"several files for the {split} split: {', '.join(p.name for p in found)}")
    return found[0]


def read_split(path: Path, spec: DataSpec) -> tuple[Split, list[str]]:
    """A labelled split from a table file or a class folder; also the files it read."""
    if path.is_dir():
        return _read_class_folders(path)
    records = _read_records(path)
    return _split_from_records(path, records, spec, labelled=True, text_column=spec.text_column), [str(path)]


def read_unlabeled(path: str | os.PathLike, text_column: str) -> Split:
    """Unlabeled text (for teacher-labelled augmentation): a table file and its text column."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise DataError(path, f"unlabeled text must be one of {', '.join(TABLE_SUFFIXES)}")
    spec = DataSpec(path=str(path.parent))
    return _split_from_records(path, _read_records(path), spec, labelled=False, text_column=text_column)


def load_dataset(spec: DataSpec) -> Dataset:
    """Both splits and the label map. A local directory is read directly; a name that is not a
    local path goes to ``datasets.load_dataset`` (needs network)."""
    directory = Path(spec.path).expanduser()
    if directory.exists():
        if not directory.is_dir():
            raise DataError(directory, "expected a dataset directory holding train and dev splits")
        train, train_files = read_split(find_split(directory, "train"), spec)
        dev, dev_files = read_split(find_split(directory, "dev"), spec)
        files = train_files + dev_files
    elif spec.path.startswith((".", "/", "~")):
        raise DataError(directory, "no such dataset directory")
    else:
        train, dev = _load_hub_dataset(spec)
        files = []
    label_map = LabelMap.from_labels(train.labels, train.source)
    label_map.encode(dev)  # fail now, naming the dev line, if dev has a label training never saw
    if spec.max_train_rows is not None and spec.max_train_rows < 2:
        raise DataError(train.source, f"max_train_rows={spec.max_train_rows}: need at least 2 rows")
    if spec.max_train_rows is not None and spec.max_train_rows < len(train):
        rng = np.random.default_rng(spec.seed)
        train = train.subset(np.sort(rng.choice(len(train), size=spec.max_train_rows, replace=False)))
        if len(set(train.labels)) < 2:
            raise DataError(train.source, f"the {spec.max_train_rows}-row subset has a single class")
    return Dataset(train=train, dev=dev, label_map=label_map, files=files)


def _load_hub_dataset(spec: DataSpec) -> tuple[Split, Split]:
    import datasets  # imported here: slow to import and only needed for hub names

    loaded = datasets.load_dataset(spec.path)
    splits = []
    for split in ("train", "dev"):
        names = [n for n in SPLIT_NAMES[split] if n in loaded]
        if not names:
            raise DataError(spec.path, f"hub dataset has no {split} split (has: {', '.join(loaded)})")
        records = [(i + 1, dict(r)) for i, r in enumerate(loaded[names[0]])]
        where = Path(f"{spec.path}[{names[0]}]")
        splits.append(_split_from_records(where, records, spec, labelled=True, text_column=spec.text_column))
    return splits[0], splits[1]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def text_hashes(split: Split) -> np.ndarray:
    """(R, 8) uint8: the first 8 bytes of sha256 of each row's text (and pair), to line rows up."""
    out = np.empty((len(split), 8), dtype=np.uint8)
    for i, text in enumerate(split.texts):
        key = text if split.text_pairs is None else text + "\x1f" + split.text_pairs[i]
        out[i] = np.frombuffer(hashlib.sha256(key.encode("utf-8")).digest()[:8], dtype=np.uint8)
    return out
