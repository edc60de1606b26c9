"""Token-classification (NER) data: CoNLL-style or JSONL splits, tag schemes, the tag map.

A dataset directory holds a ``train`` split and a ``dev`` (or ``validation``) split (the names of
``distill.data.SPLIT_NAMES``), each one file, optionally gzipped:

* CoNLL, any of ``<split>.conll``, ``<split>.txt``, ``<split>.tsv``: one token per line, the token in
  the first column and its tag in the last (other columns are ignored); columns are separated by
  tabs when the line holds a tab (so a token may contain spaces), else by runs of whitespace. A
  blank line, or one holding only whitespace, ends a sentence; ``-DOCSTART-`` lines are skipped (and
  end a sentence). There is no header, so ``.tsv`` here is not the classification table format.
* JSONL, ``<split>.jsonl``: one sentence per line, ``{"tokens": [...], "tags": [...]}``, both lists
  of strings of the same length. An empty sentence (``[]`` and ``[]``) is skipped.

Tag schemes. Every tag is ``O`` or ``<prefix>-<TYPE>`` (the type may itself hold ``-``). The files
may be written in IOB1, IOB2 (BIO) or IOBES; ``tag_scheme`` names it, or ``auto`` detects it over
the train and dev files together (``detect_scheme``). Everything after loading uses IOB2:

* IOB2 (BIO): every entity starts with ``B-X`` and goes on with ``I-X``.
* IOB1 (the original CoNLL-2003 files): an entity starts with ``I-X``; ``B-X`` appears only on the
  first token of an entity that directly follows another entity of the same type X.
* IOBES: ``B-X`` begins, ``I-X`` continues, ``E-X`` ends a multi-token entity; ``S-X`` is a
  one-token entity.

Impossible sequences, judged in the file's own scheme: in IOB2 an ``I-X`` that starts a sentence or
follows ``O`` or a tag of another type; in IOBES an ``I-X`` or ``E-X`` that does not follow ``B-X``
or ``I-X``. (IOB1 has none: there ``I-X`` may start an entity.) Each is a bad row naming the file and
the token's line; with ``repair_tags`` it is read as the start of a new entity instead (its IOB2 tag
becomes ``B-X``, which is also how seqeval's lenient reading takes it) and counted in
``NerDataset.repaired``. An entity that IOBES leaves unclosed (``B-X`` then ``O``) reads the same in
IOB2 and is accepted.

Bad input, as in ``distill.data``: a problem with a whole file raises ``DataError`` at once; a
problem with a line (a CoNLL line without a tag column, a tag that is not ``O`` or
``<prefix>-<TYPE>``, bad JSON, tokens and tags of different lengths, an impossible sequence, a dev
tag whose type training never saw, bytes that do not decode) is collected for the whole file, and
``on_bad_rows="error"`` raises one ``DataError`` listing the first 20 with their lines and the count,
while ``on_bad_rows="skip"`` drops every sentence that has one and records each problem in
``NerDataset.skipped``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.data import (
    BadRow,
    DataError,
    LabelMap,
    RowLog,
    base_suffix,
    cap_train,
    decode,
    jsonl_lines,
    one_split,
    read_bytes,
    split_files,
)

CONLL_SUFFIXES = (".conll", ".txt", ".tsv")  # read as CoNLL: a token per line, the tag in the last column
JSONL_SUFFIXES = (".jsonl",)  # a {"tokens": [...], "tags": [...]} object per line
NER_SUFFIXES = (*CONLL_SUFFIXES, *JSONL_SUFFIXES)  # each also gzipped: train.conll.gz
TAG_SCHEMES = ("auto", "iob1", "iob2", "iobes")
SCHEME_PREFIXES = {"iob1": "BI", "iob2": "BI", "iobes": "BIES"}  # prefixes each scheme writes (besides O)
DOCSTART = "-DOCSTART-"  # document separator line of the CoNLL-2003 files


@dataclass
class TokenSplit:
    """One split, sentences in file order."""

    sentences: list[list[str]]  # (S, T_s) tokens of each sentence
    tags: list[list[str]] | None  # (S, T_s) tag of each token (IOB2 once loaded), or None: unlabeled
    source: str  # the file the sentences came from
    line_numbers: list[int] = field(default_factory=list)  # (S,) line of each sentence's first token
    token_lines: list[list[int]] = field(default_factory=list)  # (S, T_s) line of each token (JSONL: the sentence's)

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.sentences)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TokenSplit:
        pick = [int(i) for i in indices]
        return TokenSplit(
            sentences=[self.sentences[i] for i in pick],
            tags=None if self.tags is None else [self.tags[i] for i in pick],
            source=self.source,
            line_numbers=[self.line_numbers[i] for i in pick] if self.line_numbers else [],
            token_lines=[self.token_lines[i] for i in pick] if self.token_lines else [],
        )


@dataclass
class NerDataset:
    """Both splits with IOB2 tags, the tag map, and what loading dropped, repaired or re-decoded."""

    train: TokenSplit  # tags in IOB2
    dev: TokenSplit  # tags in IOB2
    tag_map: LabelMap  # IOB2 tags <-> ids: O, and B-X and I-X for every type X of the training split
    tag_scheme: str  # iob1 | iob2 | iobes: the scheme the files were written in (detected under auto)
    files: list[str]  # the files the splits were read from, for fingerprints
    unused_train: TokenSplit | None = None  # training sentences left out by max_train_rows
    skipped: list[BadRow] = field(default_factory=list)  # problems of sentences dropped under on_bad_rows=skip
    repaired: dict[str, int] = field(default_factory=dict)  # file -> tags read as B-X under repair_tags (files with none absent)
    fallback_decoded: dict[str, str] = field(default_factory=dict)  # file -> encoding, under encoding=auto


@dataclass
class NerSpec:
    """Where the NER data is, its tag scheme, and how to treat bad bytes, rows and tag sequences."""

    path: str  # a dataset directory holding train and dev (or validation) splits, CoNLL or JSONL
    tag_scheme: str = "auto"  # auto | iob1 | iob2 | iobes: the files' scheme; auto detects it over train and dev
    repair_tags: bool = False  # read an impossible I-X as B-X (and count it) instead of reporting a bad row
    max_train_rows: int | None = None  # random subset of the training sentences (None: all of them)
    seed: int = 0  # seed of that subset
    encoding: str = "utf-8"  # utf-8, any Python codec, or auto (UTF-8, else cp1252, else latin-1, per file)
    on_bad_rows: str = "error"  # error: stop, listing the bad lines | skip: drop their sentences and record each


# ------------------------------------------------------------------------------------------ tags


def split_tag(tag: str) -> tuple[str, str] | None:
    """(prefix, type) of a tag: ``("O", "")`` for ``O``, ``("B", "geo-loc")`` for ``B-geo-loc``;
    None when the tag is neither ``O`` nor one of B/I/E/S, ``-`` and a non-empty type."""
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if dash and prefix in ("B", "I", "E", "S") and kind:
        return prefix, kind
    return None


def _prefix_problem(tag: str, scheme: str | None) -> str | None:
    """Why ``tag`` cannot appear in ``scheme`` (None: any of B/I/E/S), or None when it can."""
    parts = split_tag(tag)
    if parts is None:
        return f"tag {tag!r} is not O or B-, I-, E-, S- followed by a type"
    if scheme is not None and parts[0] != "O" and parts[0] not in SCHEME_PREFIXES[scheme]:
        allowed = ", ".join(f"{p}-TYPE" for p in SCHEME_PREFIXES[scheme])
        return f"tag {tag!r} is not an {scheme.upper()} tag (O, {allowed}); is tag_scheme right?"
    return None


def _types(tags: Sequence[str]) -> list[str | None]:
    """The entity type of each tag, None for O (tags must be valid: see ``split_tag``)."""
    return [None if tag == "O" else tag.partition("-")[2] for tag in tags]


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """``iobes``, ``iob1`` or ``iob2`` for valid tags (see ``split_tag``), over all sentences together.

    IOBES when any tag is ``S-X`` or ``E-X``. Otherwise the question is how entities start. An
    entity start is a non-O tag at the first token, after ``O``, or after a tag of another type.
    IOB1 when some ``I-X`` starts an entity and no ``B-X`` does (IOB1 writes ``B-X`` only after a
    tag of type X, between adjacent same-type entities); this includes files with no ``B-`` at all
    (the IO scheme). Else IOB2 (also for all-O data), where an ``I-X`` that starts an entity is an
    impossible sequence."""
    i_starts = b_starts = False
    for tags in tag_sequences:
        previous: str | None = None  # type of the previous tag, None at the start and after O
        for tag in tags:
            prefix, kind = tag[0], tag[2:]
            if prefix in ("S", "E"):
                return "iobes"
            starts = tag != "O" and kind != previous
            i_starts |= starts and prefix == "I"
            b_starts |= starts and prefix == "B"
            previous = None if tag == "O" else kind
    return "iob1" if i_starts and not b_starts else "iob2"


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 -> IOB2: an ``I-X`` that starts an entity becomes ``B-X``; everything else is kept."""
    types = _types(tags)
    return [f"B-{types[j]}" if tag.startswith("I-") and (j == 0 or types[j - 1] != types[j]) else tag
            for j, tag in enumerate(tags)]


def iob2_to_iob1(tags: Sequence[str]) -> list[str]:
    """IOB2 -> IOB1: ``B-X`` stays only right after a tag of type X; other ``B-X`` become ``I-X``."""
    types = _types(tags)
    return [f"I-{types[j]}" if tag.startswith("B-") and (j == 0 or types[j - 1] != types[j]) else tag
            for j, tag in enumerate(tags)]


def iobes_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOBES -> IOB2: ``S-X`` becomes ``B-X``, ``E-X`` becomes ``I-X``."""
    return ["B" + tag[1:] if tag.startswith("S-") else "I" + tag[1:] if tag.startswith("E-") else tag
            for tag in tags]


def iob2_to_iobes(tags: Sequence[str]) -> list[str]:
    """IOB2 -> IOBES (for valid IOB2): an entity's last token becomes ``E-X``, or ``S-X`` when it
    is also its first."""
    out = []
    for j, tag in enumerate(tags):
        continued = j + 1 < len(tags) and tags[j + 1] == "I" + tag[1:]  # the next token is I-<same type>
        if tag.startswith("B-") and not continued:
            tag = "S" + tag[1:]
        elif tag.startswith("I-") and not continued:
            tag = "E" + tag[1:]
        out.append(tag)
    return out


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """Tags written in ``scheme`` (iob1 | iob2 | iobes) as IOB2."""
    if scheme == "iob1":
        return iob1_to_iob2(tags)
    if scheme == "iobes":
        return iobes_to_iob2(tags)
    if scheme == "iob2":
        return list(tags)
    raise ValueError(f"unknown tag scheme {scheme!r}")


def impossible_tags(tags: Sequence[str], scheme: str) -> list[tuple[int, str]]:
    """(position, reason) of each tag that cannot follow the one before it in ``scheme``: in IOB2 an
    ``I-X``, in IOBES an ``I-X`` or ``E-X``, that does not follow ``B-X`` or ``I-X`` (IOB1: none)."""
    if scheme == "iob1":
        return []
    inside = ("I",) if scheme == "iob2" else ("I", "E")
    problems = []
    for j, tag in enumerate(tags):
        if tag[0] not in inside or tag[1:2] != "-":
            continue
        kind = tag[2:]
        before = tags[j - 1] if j else None
        if before not in (f"B-{kind}", f"I-{kind}"):
            where = "starts the sentence" if before is None else f"follows {before}"
            problems.append((j, f"tag {tag} {where} ({scheme.upper()} needs B-{kind} first)"))
    return problems


def repair_iob2(tags: Sequence[str], scheme: str) -> tuple[list[str], int]:
    """Tags written in ``scheme`` as IOB2, each impossible tag (``impossible_tags``) read as the
    start of a new entity (``B-X``); and how many were."""
    iob2 = to_iob2(tags, scheme)
    impossible = impossible_tags(tags, scheme)
    for j, _ in impossible:
        iob2[j] = "B" + iob2[j][1:]
    return iob2, len(impossible)


def tag_map_from(tag_sequences: Iterable[Sequence[str]], source: str) -> LabelMap:
    """The IOB2 tag map of a training split: ``O`` (always, so a model can say "no entity"), and
    ``B-X`` and ``I-X`` for every type X seen, even where the split only holds one of them (a type
    seen only in one-token entities still has multi-token ones in dev); sorted as LabelMap sorts."""
    types = {kind for tags in tag_sequences for kind in _types(tags) if kind is not None}
    return LabelMap.from_labels(["O", *(f"{p}-{kind}" for kind in types for p in "BI")], source)


# --------------------------------------------------------------------------------------- reading


def find_ner_split(directory: Path, split: str) -> Path:
    """The file holding ``split`` in ``directory``: ``<name><suffix>[.gz]`` for a name of
    ``SPLIT_NAMES[split]`` and a suffix of ``NER_SUFFIXES`` (``.conll``, ``.txt``, ``.tsv`` are CoNLL)."""
    directory = Path(directory)
    return one_split(directory, split, split_files(directory, split, NER_SUFFIXES), suffixes=NER_SUFFIXES,
                     also=f" ({', '.join(CONLL_SUFFIXES)} are read as CoNLL, .jsonl as JSON lines)")


@dataclass
class _Parsed:
    """A file as read, before its scheme is known: good sentences with their tags as written, and
    the problems of the sentences left out."""

    split: TokenSplit  # sentences without a structural problem, tags as written in the file
    bad: list[BadRow]  # problems found so far (settled with the sequence checks, file by file)
    jsonl: bool  # all tokens of a sentence share one line: problems name the token too


def _conll_sentences(path: Path, text: str, undecodable: set[int]) -> tuple[TokenSplit, list[BadRow]]:
    sentences, tags, token_lines, bad = [], [], [], []
    tokens, sentence_tags, lines, broken = [], [], [], False

    def close():
        nonlocal tokens, sentence_tags, lines, broken
        if tokens and not broken:
            sentences.append(tokens)
            tags.append(sentence_tags)
            token_lines.append(lines)
        tokens, sentence_tags, lines, broken = [], [], [], False

    for line_no, line in enumerate(text.split("\n"), start=1):
        if line_no in undecodable:
            broken = True  # decode() reported it and left "" there; that is no sentence break
            continue
        stripped = line.strip()  # also drops the \r of CRLF files
        if not stripped:
            close()
            continue
        fields = [f.strip() for f in stripped.split("\t")] if "\t" in stripped else stripped.split()
        if fields[0] == DOCSTART:
            close()
            continue
        problem = ("one column only: a token needs its tag in the last column" if len(fields) < 2
                   else _prefix_problem(fields[-1], None))
        if problem:
            bad.append(BadRow(str(path), line_no, problem))
            broken = True
            continue
        tokens.append(fields[0])
        sentence_tags.append(fields[-1])
        lines.append(line_no)
    close()
    split = TokenSplit(sentences=sentences, tags=tags, source=str(path),
                       line_numbers=[ln[0] for ln in token_lines], token_lines=token_lines)
    return split, bad


def _jsonl_problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return "each line must be a JSON object with 'tokens' and 'tags'"
    missing = [key for key in ("tokens", "tags") if key not in record]
    if missing:
        return f"missing key {' and '.join(map(repr, missing))} (found: {', '.join(map(repr, record)) or 'none'})"
    for key in ("tokens", "tags"):
        values = record[key]
        if not isinstance(values, list):
            return f"{key!r} must be a list of strings, found {type(values).__name__}"
        for j, value in enumerate(values):
            if not isinstance(value, str):
                return f"{key!r} item {j + 1} is {type(value).__name__} {value!r}, not a string"
    if len(record["tokens"]) != len(record["tags"]):
        return f"{len(record['tokens'])} tokens but {len(record['tags'])} tags"
    for j, (token, tag) in enumerate(zip(record["tokens"], record["tags"], strict=True)):
        if not token.strip():
            return f"token {j + 1} is empty"
        problem = _prefix_problem(tag, None)
        if problem:
            return f"token {j + 1} ({token!r}): {problem}"
    return None


def _jsonl_sentences(path: Path, text: str) -> tuple[TokenSplit, list[BadRow]]:
    sentences, tags, token_lines, bad = [], [], [], []
    for row in jsonl_lines(text):
        record = row.record
        problem = row.problem or _jsonl_problem(record)
        if problem:
            bad.append(BadRow(str(path), row.line, problem))
        elif record["tokens"]:  # an empty sentence carries nothing to learn or score
            sentences.append(record["tokens"])
            tags.append(record["tags"])
            token_lines.append([row.line] * len(record["tokens"]))
    split = TokenSplit(sentences=sentences, tags=tags, source=str(path),
                       line_numbers=[ln[0] for ln in token_lines], token_lines=token_lines)
    return split, bad


def _parse_file(path: Path, encoding: str, log: RowLog) -> _Parsed:
    raw = read_bytes(path)
    if not raw.strip():
        raise DataError(path, "file is empty")
    text, bad, fallback = decode(raw, path, encoding)
    if fallback:
        log.fallback_decoded[str(path)] = fallback
    jsonl = base_suffix(path) in JSONL_SUFFIXES
    if jsonl:
        split, problems = _jsonl_sentences(path, text)
    else:
        split, problems = _conll_sentences(path, text, {row.line for row in bad})
    return _Parsed(split=split, bad=bad + problems, jsonl=jsonl)


def _check(parsed: _Parsed, scheme: str, repair: bool, log: RowLog, repaired: dict[str, int],
           tag_map: LabelMap | None = None) -> TokenSplit:
    """The file's sentences with IOB2 tags, after the scheme's checks (and the tag map's, for dev);
    all of the file's problems are settled here, at once."""
    split, bad = parsed.split, list(parsed.bad)
    known = tag_map.label2id if tag_map is not None else None
    keep, converted, repairs = [], [], 0
    for i, (tokens, tags, lines) in enumerate(zip(split.sentences, split.tags, split.token_lines, strict=True)):
        problems = [(j, p) for j, tag in enumerate(tags) if (p := _prefix_problem(tag, scheme))]
        iob2: list[str] = []  # stays empty for a sentence with a problem (it is dropped)
        count = 0
        if not problems and not repair:
            problems += impossible_tags(tags, scheme)
        if not problems:
            iob2, count = repair_iob2(tags, scheme)
        if not problems and known is not None:
            problems += [(j, _unseen_reason(tags[j], tag_map)) for j, tag in enumerate(iob2) if tag not in known]
        if problems:
            for j, reason in problems:
                where = f"token {j + 1} ({tokens[j]!r}): " if parsed.jsonl else ""
                bad.append(BadRow(split.source, lines[j], where + reason))
            continue
        keep.append(i)
        converted.append(iob2)
        repairs += count  # counted for kept sentences only: a dropped one's repairs never happened
    log.pending.extend(sorted(bad, key=lambda row: row.line or 0))
    log.settle(split.source)
    if not keep:
        raise DataError(split.source, "no sentences" if not bad else "no usable sentences (every one was bad)")
    if repairs:
        repaired[split.source] = repairs
    out = split.subset(keep)
    out.tags = converted
    return out


def _unseen_reason(tag: str, tag_map: LabelMap) -> str:
    kind = tag.partition("-")[2]
    types = sorted({name[2:] for name in tag_map.names if name != "O"})
    return f"tag {tag!r}: type {kind!r} never appears in the training split (known types: {', '.join(types)})"


def load_ner_dataset(spec: NerSpec) -> NerDataset:
    """Both splits (tags converted to IOB2) and the tag map, from a local dataset directory."""
    if spec.tag_scheme not in TAG_SCHEMES:
        raise DataError("tag_scheme", f"{spec.tag_scheme!r}: expected one of {', '.join(TAG_SCHEMES)}")
    log = RowLog(spec.on_bad_rows)
    directory = Path(spec.path).expanduser()
    if not directory.exists():
        raise DataError(directory, "no such dataset directory")
    if not directory.is_dir():
        raise DataError(directory, "expected a dataset directory holding train and dev splits")
    train_file, dev_file = find_ner_split(directory, "train"), find_ner_split(directory, "dev")
    train_parsed = _parse_file(train_file, spec.encoding, log)
    dev_parsed = _parse_file(dev_file, spec.encoding, log)
    scheme = spec.tag_scheme
    if scheme == "auto":  # one scheme for the dataset: a small dev file alone can look like either
        scheme = detect_scheme([*train_parsed.split.tags, *dev_parsed.split.tags])
    repaired: dict[str, int] = {}
    train = _check(train_parsed, scheme, spec.repair_tags, log, repaired)
    tag_map = tag_map_from(train.tags, train.source)
    dev = _check(dev_parsed, scheme, spec.repair_tags, log, repaired, tag_map)
    train, unused = cap_train(train, spec.max_train_rows, seed=spec.seed, least=1, unit="sentence")
    return NerDataset(train=train, dev=dev, tag_map=tag_map, tag_scheme=scheme,
                      files=[str(train_file), str(dev_file)], unused_train=unused, skipped=log.skipped,
                      repaired=repaired, fallback_decoded=log.fallback_decoded)
