"""Datasets: a local directory (TSV / CSV / JSONL splits, or a folder per class) or a hub name.

A dataset directory holds a ``train`` split and a ``dev`` (or ``validation``) split, each as
``<split>.tsv``, ``<split>.csv`` or ``<split>.jsonl`` (each may be gzipped: ``train.tsv.gz``), or as
``<split>/<label>/*.txt``. The label map is derived from the training split (sorted label values)
and travels with every model as ``id2label`` / ``label2id``.

Bad input: a problem with a whole file (missing, empty, no header, a missing column) raises
``DataError`` at once. A problem with a row (empty text or label, wrong field count, bad JSON,
bytes that do not decode, a dev label training never saw) is collected for the whole file: with
``on_bad_rows="error"`` (the default) ``DataError`` then lists the first 20 with their lines and
the count; with ``on_bad_rows="skip"`` the rows are dropped and recorded in ``Dataset.skipped``.

Label-free text (teacher-scored transfer sets) comes from ``read_texts``: a ``.txt`` file (one
example per line), a table and its text column, or a folder of ``.txt`` files.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.errors import PipelineError

SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation")}
TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl")
TEXT_SUFFIXES = (".txt", *TABLE_SUFFIXES)  # what read_texts takes (each also gzipped)
BAD_ROW_POLICIES = ("error", "skip")
MAX_LISTED = 20  # bad rows named in one error message
AUTO_FALLBACKS = ("cp1252", "latin-1")  # encoding=auto: tried in order after UTF-8 (latin-1 never fails)
# The default dataset travels with the project: SST-2 (data/sst2/SOURCE.txt), found from any directory.
DEFAULT_DATA = str(Path(__file__).resolve().parents[1] / "data" / "sst2")


@dataclass(frozen=True)
class BadRow:
    """One row that could not be read: where it is and why."""

    path: str
    line: int | None  # None for a whole file that is one row (class folders)
    reason: str


class DataError(ValueError, PipelineError):
    """Bad input data: the message names the file, the line (when there is one) and the problem.
    ``rows`` holds every bad row when several were found in one file (the message lists the first
    20 and the count); ``line`` and ``problem`` are the first one's."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None, *,
                 rows: list[BadRow] | None = None):
        rows = rows or [BadRow(str(path), line, problem)]
        if len(rows) == 1:
            where = f"{path}" if line is None else f"{path}, line {line}"
            message = f"{where}: {problem}"
        else:
            listed = [f"  {_where_in(r, path)}: {r.reason}" for r in rows[:MAX_LISTED]]
            shown = f"the first {MAX_LISTED}" if len(rows) > MAX_LISTED else "all of them"
            message = f"{path}: {len(rows)} bad rows ({shown} below)\n" + "\n".join(listed)
        super().__init__(message)
        self.path, self.line, self.problem, self.rows = str(path), line, problem, rows


def _where_in(row: BadRow, path) -> str:
    if row.path != str(path):
        return row.path if row.line is None else f"{row.path}, line {row.line}"
    return "whole file" if row.line is None else f"line {row.line}"


@dataclass
class RowLog:
    """Bad rows met while reading, and what to do with them (``policy``: error | skip)."""

    policy: str = "error"
    skipped: list[BadRow] = field(default_factory=list)  # rows dropped under policy "skip"
    fallback_decoded: dict[str, str] = field(default_factory=dict)  # file -> encoding used, under "auto"
    pending: list[BadRow] = field(default_factory=list)

    def __post_init__(self):
        if self.policy not in BAD_ROW_POLICIES:
            raise DataError("on_bad_rows", f"{self.policy!r}: expected one of {', '.join(BAD_ROW_POLICIES)}")

    def add(self, path, line: int | None, reason: str) -> None:
        self.pending.append(BadRow(str(path), line, reason))

    def settle(self, path) -> None:
        """End of a file (or folder): raise for its bad rows, or keep them as skipped."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        if self.policy == "error":
            first = pending[0]
            if len(pending) == 1:  # name the bad file itself (a class folder's row is a file)
                raise DataError(first.path, first.reason, first.line)
            raise DataError(path, first.reason, first.line if first.path == str(path) else None, rows=pending)
        self.skipped.extend(pending)


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

    @classmethod
    def concat(cls, parts: list[Split], source: str) -> Split:
        """Rows of ``parts`` one after the other (label-free if any part is)."""
        labels = None if any(p.labels is None for p in parts) else [x for p in parts for x in p.labels]
        pairs = None if any(p.text_pairs is None for p in parts) else [x for p in parts for x in p.text_pairs]
        return cls(texts=[t for p in parts for t in p.texts], labels=labels, source=source, text_pairs=pairs)

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

    def unknown_rows(self, split: Split) -> list[int]:
        """Indices of rows whose label the training split never saw."""
        known = self.label2id
        return [i for i, label in enumerate(split.labels or []) if label not in known]

    def unknown_reason(self, label: str) -> str:
        return f"label {label!r} never appears in the training split (known labels: {', '.join(self.names)})"

    def encode(self, split: Split) -> np.ndarray:
        """(R,) int64 label ids; a label the training split never saw is an error (every such row
        of the split is listed)."""
        assert split.labels is not None
        unknown = self.unknown_rows(split)
        if unknown:
            rows = [BadRow(split.source, split.line_numbers[i] if split.line_numbers else None,
                           self.unknown_reason(split.labels[i])) for i in unknown]
            raise DataError(split.source, rows[0].reason, rows[0].line, rows=rows)
        to_id = self.label2id
        return np.array([to_id[label] for label in split.labels], dtype=np.int64)


@dataclass
class Dataset:
    train: Split
    dev: Split
    label_map: LabelMap
    files: list[str]  # every file the splits were read from, for fingerprints
    unused_train: Split | None = None  # training rows left out by max_train_rows (labels kept)
    skipped: list[BadRow] = field(default_factory=list)  # rows dropped under on_bad_rows=skip
    fallback_decoded: dict[str, str] = field(default_factory=dict)  # file -> encoding, under encoding=auto
    deduped: dict[str, int] = field(default_factory=dict)  # dedupe: train rows dropped, {"dev_duplicates", "train_repeats"}


@dataclass
class DataSpec:
    """Where the data is, which columns to read, and how to treat bad bytes and rows."""

    path: str  # a dataset directory, or a hub dataset name (needs network)
    text_column: str = "text"  # column with the input text
    text_pair_column: str | None = None  # second text column for sentence-pair tasks
    label_column: str = "label"  # column with the label (string or int)
    max_train_rows: int | None = None  # random subset of the training split (None: all rows)
    seed: int = 0  # seed of that subset
    encoding: str = "utf-8"  # utf-8, any Python codec, or auto (UTF-8, else cp1252, else latin-1, per file)
    on_bad_rows: str = "error"  # error: stop, listing the bad rows | skip: drop them and record each
    dedupe: bool = False  # drop train rows whose normalised text is a dev row's or an earlier train row's


def normalise_text(text: str) -> str:
    """Case and spacing folded: the key that finds near-exact duplicates."""
    return re.sub(r"\s+", " ", text).strip().lower()


def normalised_keys(split: Split) -> list[str]:
    """(R,) each row's duplicate key: its normalised text (and pair, joined by \\x1f)."""
    if split.text_pairs is None:
        return [normalise_text(t) for t in split.texts]
    return [normalise_text(t) + "\x1f" + normalise_text(p) for t, p in zip(split.texts, split.text_pairs, strict=True)]


def dedupe_train(train: Split, dev: Split) -> tuple[Split, dict[str, int]]:
    """``train`` without the rows whose normalised text (``normalised_keys``) is a dev row's, and
    without rows repeating an earlier kept train row (the first one stays, whatever the labels);
    and the counts of both."""
    dev_keys = set(normalised_keys(dev))
    seen: set[str] = set()
    keep, in_dev, repeats = [], 0, 0
    for i, key in enumerate(normalised_keys(train)):
        if key in dev_keys:
            in_dev += 1
        elif key in seen:
            repeats += 1
        else:
            seen.add(key)
            keep.append(i)
    return train.subset(np.asarray(keep, dtype=np.int64)), {"dev_duplicates": in_dev, "train_repeats": repeats}


def _label_sort_key(label: str) -> tuple[int, int, str]:
    # integer-looking labels sort numerically ("2" < "10"), others lexically, ints first; the
    # string breaks ties ("01" vs "1") so the order never depends on set iteration order
    try:
        return (0, int(label), label)
    except ValueError:
        return (1, 0, label)


def _normalise_label(value: object) -> str | None:
    """The label as a string, or None when it is empty."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _text_problem(value: object, column: str) -> str | None:
    if value is None or not isinstance(value, str | int | float):
        return f"column {column!r} is missing or not text"
    if str(value).strip() == "":
        return f"empty text in column {column!r}"
    return None


def base_suffix(path: Path) -> str:
    """``.tsv`` for ``train.tsv`` and ``train.tsv.gz``."""
    return Path(path.name[:-3]).suffix if path.name.endswith(".gz") else path.suffix


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line of a JSONL file, parsed or not."""

    line: int  # its 1-based line number in the file
    record: object  # the parsed value (None when ``problem`` is set)
    problem: str | None  # "not valid JSON (...)" when the line does not parse, else None


def jsonl_lines(text: str) -> Iterator[JsonLine]:
    """The non-blank lines of a JSONL file's text, in order, each parsed or with its problem: the
    one reader of JSONL rows (classification, NER and transfer text); whether a bad line is
    logged, skipped or fatal is the caller's."""
    # split on "\n" only: str.splitlines also breaks at U+2028, U+0085, \x0c ..., which
    # JSON strings may hold raw (json.dumps(..., ensure_ascii=False) writes them)
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield JsonLine(line_no, None, f"not valid JSON ({err.msg})")
            continue
        yield JsonLine(line_no, record, None)


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when the name ends in ``.gz``."""
    if not path.exists():
        raise DataError(path, "file not found")
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(path, f"not a readable gzip file ({err})") from err
    return raw


def decode(raw: bytes, path: Path, encoding: str) -> tuple[str, list[BadRow], str | None]:
    """(text, bad rows, fallback encoding used or None). A line that does not decode is a bad row
    (named with its line and byte offset) and reads as an empty line; ``encoding="auto"`` tries
    UTF-8, then each of ``AUTO_FALLBACKS``, for the whole file."""
    # strip the BOM ourselves (not "utf-8-sig") so that error offsets count the file's own bytes
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") and encoding in ("utf-8", "auto") else 0
    codec = "utf-8" if encoding == "auto" else encoding
    try:
        return raw[bom:].decode(codec), [], None
    except LookupError as err:
        raise DataError(path, f"unknown encoding {encoding!r}") from err
    except UnicodeDecodeError:
        pass
    if encoding == "auto":
        for fallback in AUTO_FALLBACKS:
            try:
                return raw.decode(fallback), [], fallback
            except UnicodeDecodeError:
                continue
    lines, bad, offset = [], [], bom
    name = "UTF-8" if codec.replace("_", "-").lower() in ("utf-8", "utf8") else codec
    for line_no, chunk in enumerate(raw[bom:].split(b"\n"), start=1):
        try:
            lines.append(chunk.decode(codec))
        except UnicodeDecodeError as err:
            bad.append(BadRow(str(path), line_no, f"bytes that are not {name} at byte {offset + err.start}"))
            lines.append("")
        offset += len(chunk) + 1
    return "\n".join(lines), bad, None


def _read_text_file(path: Path, encoding: str, log: RowLog) -> str:
    """A whole file's text; each undecodable line is a bad row in ``log``."""
    raw = read_bytes(path)
    if not raw.strip():
        raise DataError(path, "file is empty")
    text, bad, fallback = decode(raw, path, encoding)
    log.pending.extend(bad)
    if fallback:
        log.fallback_decoded[str(path)] = fallback
    return text


def _read_records(path: Path, encoding: str, log: RowLog) -> list[tuple[int, dict]]:
    """(line number, record) pairs from a TSV, CSV or JSONL file (possibly gzipped). Bad rows go
    to ``log``; problems with the whole file raise."""
    text = _read_text_file(path, encoding, log)
    records: list[tuple[int, dict]] = []
    suffix = base_suffix(path)
    if suffix == ".jsonl":
        for row in jsonl_lines(text):
            problem = row.problem or (None if isinstance(row.record, dict) else "each line must be a JSON object")
            if problem:
                log.add(path, row.line, problem)
            else:
                records.append((row.line, row.record))
        if not records:
            log.settle(path)
            raise DataError(path, "no rows")
        return records

    delimiter = "\t" if suffix == ".tsv" else ","
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
            log.add(path, line_no, f"unreadable {kind} row ({err})")
            continue
        if fields is None:
            break
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) != len(header):
            log.add(path, line_no, f"expected {len(header)} fields ({', '.join(header)}), found {len(fields)}")
            continue
        records.append((line_no, dict(zip(header, fields, strict=True))))
    if not records:
        bad = len(log.pending)
        log.settle(path)  # under on_bad_rows=error this raises, listing them
        raise DataError(path, "no usable rows (every row was bad)" if bad else "no rows after the header")
    return records


def _split_from_records(path: Path, records: list[tuple[int, dict]], *, text_column: str,
                        text_pair_column: str | None, label_column: str | None, log: RowLog) -> Split:
    """Rows of ``records`` as a Split (labelled when ``label_column`` is given); bad rows go to
    ``log``, which is settled (raise or skip) before returning."""
    columns = [text_column] + ([text_pair_column] if text_pair_column else [])
    if label_column is not None:
        columns.append(label_column)
    first_line, first = records[0]
    for column in columns:
        if column not in first:
            raise DataError(path, f"missing column {column!r} (found: {', '.join(map(str, first))})", first_line)
    texts, lines = [], []
    pairs = [] if text_pair_column else None
    labels = [] if label_column is not None else None
    for line_no, record in records:
        problem = _text_problem(record.get(text_column), text_column)
        if problem is None and text_pair_column:
            problem = _text_problem(record.get(text_pair_column), text_pair_column)
        label = None
        if problem is None and label_column is not None:
            label = _normalise_label(record.get(label_column))
            problem = "empty label" if label is None else None
        if problem is not None:
            log.add(path, line_no, problem)
            continue
        texts.append(str(record[text_column]))
        if pairs is not None:
            pairs.append(str(record[text_pair_column]))
        if labels is not None:
            labels.append(label)
        lines.append(line_no)
    log.settle(path)
    if not texts:
        raise DataError(path, "no usable rows (every row was bad)")
    return Split(texts=texts, labels=labels, source=str(path), text_pairs=pairs, line_numbers=lines)


def _txt_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".txt", ".txt.gz")))


def _read_file_rows(files: list[Path], encoding: str, log: RowLog) -> tuple[list[str], list[Path]]:
    """One example per file. An empty file, or one with bytes that do not decode, is one bad row
    (named with its first undecodable line)."""
    texts, kept = [], []
    for file in files:
        raw = read_bytes(file)
        text, bad, fallback = decode(raw, file, encoding) if raw.strip() else ("", [], None)
        if bad:
            log.pending.append(bad[0])
        elif not text.strip():
            log.add(file, None, "file is empty")
        else:
            texts.append(text.strip())
            kept.append(file)
            if fallback:
                log.fallback_decoded[str(file)] = fallback
    return texts, kept


def _read_class_folders(folder: Path, encoding: str, log: RowLog) -> tuple[Split, list[str]]:
    """``folder/<label>/*.txt``: one example per file, the label is the folder name."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(folder, "no class sub-folders (expected <split>/<label>/*.txt)")
    texts, labels, files = [], [], []
    for class_dir in class_dirs:
        found = _txt_files(class_dir)
        files += [str(f) for f in found]
        class_texts, _ = _read_file_rows(found, encoding, log)
        texts += class_texts
        labels += [class_dir.name] * len(class_texts)
    log.settle(folder)
    if not texts:
        raise DataError(folder, "no .txt files under the class folders")
    return Split(texts=texts, labels=labels, source=str(folder), line_numbers=[]), files


def split_files(directory: Path, split: str, suffixes: tuple[str, ...]) -> list[Path]:
    """Every file ``<name><suffix>[.gz]`` in ``directory`` for a name of ``SPLIT_NAMES[split]``
    (classification and NER splits alike; each task has its suffixes)."""
    return [
        directory / f"{name}{suffix}{gz}"
        for name in SPLIT_NAMES[split]
        for suffix in suffixes
        for gz in ("", ".gz")
        if (directory / f"{name}{suffix}{gz}").is_file()
    ]


def one_split(directory: Path, split: str, found: list[Path], *, suffixes: tuple[str, ...], also: str) -> Path:
    """The one path of ``found`` holding ``split``; a DataError when there is none (naming the
    files looked for, in ``suffixes``, then ``also``) or several."""
    if not found:
        wanted = " or ".join(f"{n}{{{','.join(suffixes)}}}[.gz]" for n in SPLIT_NAMES[split])
        raise DataError(directory, f"no {split} split: expected {wanted}{also}")
    if len(found) > 1:
        raise DataError(directory, f"several files for the {split} split: {', '.join(p.name for p in found)}")
    return found[0]


def cap_train(train, max_rows: int | None, *, seed: int, least: int, unit: str):
    """``max_train_rows``, classification and NER alike: (``train``'s subset of ``max_rows`` rows
    drawn without replacement by ``seed``, in file order; the rows left out), or (``train``, None)
    when there is no cap or it is not below the rows there are. ``train`` is a ``Split`` or an NER
    ``TokenSplit``; a cap under ``least`` is a DataError (``unit``: what a row is called)."""
    if max_rows is None:
        return train, None
    if max_rows < least:
        raise DataError(train.source, f"max_train_rows={max_rows}: need at least {least} {unit}")
    if max_rows >= len(train):
        return train, None
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(train), size=max_rows, replace=False))
    return train.subset(chosen), train.subset(np.setdiff1d(np.arange(len(train)), chosen))


def find_split(directory: Path, split: str) -> Path:
    """The file (or class folder) holding ``split`` in ``directory``."""
    found = split_files(directory, split, TABLE_SUFFIXES)
    found += [directory / name for name in SPLIT_NAMES[split] if (directory / name).is_dir()]
    return one_split(directory, split, found, suffixes=TABLE_SUFFIXES,
                     also=f" or a {SPLIT_NAMES[split][0]}/ class folder")


def find_optional(directory: Path, names: tuple[str, ...]) -> Path | None:
    """The first ``<name>.{txt,tsv,csv,jsonl}[.gz]`` in ``directory``, or None."""
    for name in names:
        for suffix in TEXT_SUFFIXES:
            for gz in ("", ".gz"):
                if (directory / f"{name}{suffix}{gz}").is_file():
                    return directory / f"{name}{suffix}{gz}"
    return None


def read_split(path: Path, spec: DataSpec, log: RowLog) -> tuple[Split, list[str]]:
    """A labelled split from a table file or a class folder; also the files it read."""
    if path.is_dir():
        return _read_class_folders(path, spec.encoding, log)
    records = _read_records(path, spec.encoding, log)
    split = _split_from_records(path, records, text_column=spec.text_column, text_pair_column=spec.text_pair_column,
                                label_column=spec.label_column, log=log)
    return split, [str(path)]


def load_dataset(spec: DataSpec) -> Dataset:
    """Both splits and the label map. A local directory is read directly; a name that is not a
    local path goes to ``datasets.load_dataset`` (needs network)."""
    log = RowLog(spec.on_bad_rows)
    directory = Path(spec.path).expanduser()
    if directory.exists():
        if not directory.is_dir():
            raise DataError(directory, "expected a dataset directory holding train and dev splits")
        train, train_files = read_split(find_split(directory, "train"), spec, log)
        dev, dev_files = read_split(find_split(directory, "dev"), spec, log)
        files = train_files + dev_files
    elif spec.path.startswith((".", "/", "~")):
        raise DataError(directory, "no such dataset directory")
    else:
        train, dev = _load_hub_dataset(spec, log)
        files = []
    label_map = LabelMap.from_labels(train.labels, train.source)
    unknown = label_map.unknown_rows(dev)
    if unknown and log.policy == "skip":
        for i in unknown:
            log.add(dev.source, dev.line_numbers[i] if dev.line_numbers else None, label_map.unknown_reason(dev.labels[i]))
        log.settle(dev.source)
        if len(unknown) == len(dev):  # nothing left to evaluate or choose checkpoints on
            raise DataError(dev.source, f"on_bad_rows=skip dropped every one of its {len(dev)} rows: their labels "
                                        f"never appear in the training split (known labels: {', '.join(label_map.names)})")
        dev = dev.subset(np.array(sorted(set(range(len(dev))) - set(unknown))))
    label_map.encode(dev)  # fail now, naming every dev line whose label training never saw
    deduped = {}
    if spec.dedupe:
        train, deduped = dedupe_train(train, dev)
        if len(train) == 0:
            raise DataError(train.source, "dedupe=true dropped every training row (each is also a dev row)")
    train, unused = cap_train(train, spec.max_train_rows, seed=spec.seed, least=2, unit="rows")
    if unused is not None and len(set(train.labels)) < 2:
        raise DataError(train.source, f"the {spec.max_train_rows}-row subset has a single class")
    return Dataset(train=train, dev=dev, label_map=label_map, files=files, unused_train=unused,
                   skipped=log.skipped, fallback_decoded=log.fallback_decoded, deduped=deduped)


def _load_hub_dataset(spec: DataSpec, log: RowLog) -> tuple[Split, Split]:
    import datasets  # imported here: slow to import and only needed for hub names

    loaded = datasets.load_dataset(spec.path)
    splits = []
    for split in ("train", "dev"):
        names = [n for n in SPLIT_NAMES[split] if n in loaded]
        if not names:
            raise DataError(spec.path, f"hub dataset has no {split} split (has: {', '.join(loaded)})")
        records = [(i + 1, dict(r)) for i, r in enumerate(loaded[names[0]])]
        where = Path(f"{spec.path}[{names[0]}]")
        splits.append(_split_from_records(where, records, text_column=spec.text_column,
                                          text_pair_column=spec.text_pair_column,
                                          label_column=spec.label_column, log=log))
    return splits[0], splits[1]


def read_texts(path: str | os.PathLike, *, text_column: str | None = None, default_columns: tuple[str, ...] = (),
               encoding: str = "utf-8") -> tuple[Split, dict[str, int]]:
    """Label-free text, one example per row: a ``.txt`` file (one per line), a TSV / CSV / JSONL
    table (the column ``text_column``, or else the first of ``default_columns`` the table has), or
    a folder of ``.txt`` files (one per file); each file may be gzipped. Empty lines and rows are
    skipped and counted; bytes that do not decode are an error naming the file and line.
    Returns the split and the counts of what was skipped ({"empty": n})."""
    path = Path(path)
    log = RowLog("error")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".txt", ".txt.gz")))
        if not files:
            raise DataError(path, "no .txt files in this folder")
        texts, kept = _read_file_rows(files, encoding, log)
        empty = [r for r in log.pending if r.reason == "file is empty"]
        log.pending = [r for r in log.pending if r.reason != "file is empty"]
        log.settle(path)
        return Split(texts=texts, labels=None, source=str(path), line_numbers=[]), {"empty": len(empty)}
    suffix = base_suffix(path)
    if suffix not in TEXT_SUFFIXES:
        raise DataError(path, f"label-free text must be a folder or one of {', '.join(TEXT_SUFFIXES)} (optionally .gz)")
    if suffix == ".txt":
        lines = _read_text_file(path, encoding, log).split("\n")
        log.settle(path)
        if lines[-1] == "":
            lines.pop()  # the file's final newline ends the last line; it is not an empty row
        texts, numbers = [], []
        for line_no, line in enumerate(lines, start=1):
            if line.strip():
                texts.append(line.rstrip("\r"))
                numbers.append(line_no)
        return Split(texts=texts, labels=None, source=str(path), line_numbers=numbers), {"empty": len(lines) - len(texts)}
    records = _read_records(path, encoding, log)
    log.settle(path)
    columns = [text_column] if text_column else list(default_columns)
    column = next((c for c in columns if c in records[0][1]), None)
    if column is None:
        raise DataError(path, f"no text column: looked for {', '.join(map(repr, columns))} "
                              f"(found: {', '.join(map(str, records[0][1]))})", records[0][0])
    empty_log = RowLog("skip")
    split = _split_from_records(path, records, text_column=column, text_pair_column=None, label_column=None,
                                log=empty_log)
    not_empty = [r for r in empty_log.skipped if not r.reason.startswith("empty text")]
    if not_empty:
        raise DataError(path, not_empty[0].reason, not_empty[0].line, rows=not_empty)
    return split, {"empty": len(empty_log.skipped)}


def write_skipped_rows(directory: Path, dataset: Dataset) -> Path | None:
    """``skipped_rows.jsonl`` in ``directory``: one line per row dropped under on_bad_rows=skip
    (file, line, reason), and one line in the log saying how many; nothing when none was."""
    path = Path(directory) / "skipped_rows.jsonl"
    if not dataset.skipped:
        path.unlink(missing_ok=True)
        return None
    from distill.config import atomic_write_text

    atomic_write_text(path, "".join(json.dumps({"file": r.path, "line": r.line, "reason": r.reason}) + "\n"
                                    for r in dataset.skipped))
    print(f"data: skipped {len(dataset.skipped)} bad rows (on_bad_rows=skip), each listed in {path}")
    return path


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
