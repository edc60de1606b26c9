"""NER transfer sets: label-free sentences the teacher scores per word, so the student learns the
teacher's tags on far more sentences than the labelled ones (KD-only rows: no CE).

Sources (the teacher's ``--transfer`` list with ``--task=ner``; resolved by
``distill.transfer.resolve_sources``, the same names and notes as classification's):

    unused_train   the training sentences the teacher did not train on (``max_train_rows`` left
                   them out); their tags are dropped
    unlabeled      the dataset directory's ``unlabeled.*`` or ``test_unlabeled.*`` file, if any
    <path>         a file of sentences, read by ``transfer_format``:
                     lines   one sentence per line (``.txt``): words split on whitespace, or the
                             matches of the regex ``transfer_word_pattern`` (``\\w+|[^\\w\\s]``
                             splits punctuation off, as CoNLL files do)
                     conll   a CoNLL file (``.conll``, ``.tsv``): a token per line, the token in the
                             first column; any tag columns are dropped, a one-column file is fine
                     jsonl   ``{"tokens": [...]}`` per line (``.jsonl``); any ``tags`` are dropped
                     auto    by the suffix, as just listed (each may be gzipped)

Every source drops sentences whose words (case and spacing aside) are also a dev sentence's, and
counts them, and ``transfer_rows`` caps each source (a seeded sample, file order kept): the rules
of ``distill.transfer.select_rows``. A source is recorded in the teacher's ``distill.json``;
``read_ner_transfer`` turns it back into exactly the sentences the teacher scored.
"""

from __future__ import annotations

import re
from pathlib import Path

from distill.config import ConfigError
from distill.data import DataError, base_suffix, decode, jsonl_lines, normalise_text, read_bytes
from distill.ner_data import DOCSTART, NerDataset, NerSpec, TokenSplit
from distill.transfer import AUGMENTED, UNUSED_TRAIN, select_rows

FORMATS = ("auto", "lines", "conll", "jsonl")
SUFFIX_FORMATS = {".txt": "lines", ".conll": "conll", ".tsv": "conll", ".jsonl": "jsonl"}  # transfer_format=auto


def file_keys(transfer_format: str, word_pattern: str | None) -> dict:
    """What a file source records of how its lines become sentences (checked here, before any work)."""
    if transfer_format not in FORMATS:
        raise ConfigError(f"--transfer_format={transfer_format!r}: expected one of {', '.join(FORMATS)}")
    if word_pattern is not None:
        try:
            re.compile(word_pattern)
        except re.error as err:
            raise ConfigError(f"--transfer_word_pattern={word_pattern!r}: not a regular expression ({err})") from err
    return {"format": transfer_format, "word_pattern": word_pattern}


def check_sources(requested: list[str], augment_factor: int) -> None:
    """Augmentation rewrites texts, which would move the words the tags belong to: classification only."""
    if AUGMENTED in requested or augment_factor > 0:
        raise ConfigError("--task=ner: the augmented transfer set and --augment_factor apply to classification only "
                          "(ner: unused_train, unlabeled, or a file of sentences)")


def sentence_key(words: list[str]) -> str:
    """The duplicate key of a sentence: its words joined by spaces, case and spacing folded."""
    return normalise_text(" ".join(words))


def read_ner_transfer(source: dict, *, dataset: NerDataset, spec: NerSpec) -> tuple[TokenSplit, dict[str, int]]:
    """The sentences a source dict describes (no tags), dev duplicates dropped and capped at
    ``max_rows``; and the counts of what was read, skipped (empty lines) and dropped.
    Deterministic: the teacher and every student get the same sentences."""
    kind = source["kind"]
    if kind == UNUSED_TRAIN:
        if dataset.unused_train is None:
            raise DataError(spec.path, "the transfer set 'unused_train' needs training sentences the teacher left out "
                                       "(max_train_rows)")
        rows = dataset.unused_train
        split = TokenSplit(sentences=rows.sentences, tags=None, source=f"{rows.source} (sentences the teacher did not "
                           "train on)", line_numbers=rows.line_numbers)
        empty = 0
    elif kind == "file":
        split, empty = read_sentences(Path(source["path"]), transfer_format=source["format"],
                                      word_pattern=source["word_pattern"], encoding=spec.encoding)
    else:
        raise DataError(spec.path, f"unknown NER transfer source kind {kind!r}")
    keep, dropped_dev = select_rows([sentence_key(s) for s in split.sentences],
                                    {sentence_key(s) for s in dataset.dev.sentences}, source, where=split.source)
    return split.subset(keep), {"read": len(split), "skipped_empty": empty, "dropped_dev": dropped_dev,
                                "rows": len(keep)}


def read_sentences(path: Path, *, transfer_format: str, word_pattern: str | None, encoding: str = "utf-8"
                   ) -> tuple[TokenSplit, int]:
    """(the label-free sentences of a file, how many empty lines or sentences were skipped).
    Bytes that do not decode are an error naming the file and line."""
    if path.is_dir():
        raise DataError(path, "an NER transfer source is a file of sentences (one per line, CoNLL or JSONL), "
                              "not a folder")
    fmt = transfer_format
    if fmt == "auto":
        fmt = SUFFIX_FORMATS.get(base_suffix(path))
        if fmt is None:
            raise DataError(path, f"cannot tell how to read {path.name}: name it {', '.join(SUFFIX_FORMATS)} "
                                  "(optionally .gz) or give --transfer_format=lines|conll|jsonl")
    text, bad, _ = decode(read_bytes(path), path, encoding)
    if bad:
        raise DataError(path, bad[0].reason, bad[0].line)
    reader = {"lines": _lines, "conll": _conll_tokens, "jsonl": _jsonl_tokens}[fmt]
    sentences, lines, empty = reader(path, text, re.compile(word_pattern) if word_pattern else None)
    if not sentences:
        raise DataError(path, "no sentences in this file")
    return TokenSplit(sentences=sentences, tags=None, source=str(path), line_numbers=lines), empty


def _lines(path: Path, text: str, pattern: re.Pattern | None) -> tuple[list[list[str]], list[int], int]:
    sentences, lines, empty = [], [], 0
    rows = text.split("\n")
    for line_no, line in enumerate(rows, start=1):
        words = [m.group(0) for m in pattern.finditer(line)] if pattern is not None else line.split()
        if words:
            sentences.append(words)
            lines.append(line_no)
        elif line or line_no < len(rows):  # what follows the file's final newline is no empty line
            empty += 1
    return sentences, lines, empty


def _conll_tokens(path: Path, text: str, pattern: re.Pattern | None) -> tuple[list[list[str]], list[int], int]:
    """Tokens of a CoNLL file (first column; a tab-separated line keeps spaces inside its token),
    sentences ended by blank lines and ``-DOCSTART-`` lines; the tag columns are not read."""
    sentences, lines, current, start = [], [], [], 0
    for line_no, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        token = (stripped.split("\t")[0].strip() if "\t" in stripped else stripped.split()[0]) if stripped else ""
        if token and token != DOCSTART:
            start = start or line_no
            current.append(token)
            continue
        if current:
            sentences.append(current)
            lines.append(start)
        current, start = [], 0
    if current:
        sentences.append(current)
        lines.append(start)
    return sentences, lines, 0


def _jsonl_tokens(path: Path, text: str, pattern: re.Pattern | None) -> tuple[list[list[str]], list[int], int]:
    sentences, lines, empty = [], [], 0
    for row in jsonl_lines(text):
        if row.problem:
            raise DataError(path, row.problem, row.line)
        tokens = row.record.get("tokens") if isinstance(row.record, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t.strip() for t in tokens):
            raise DataError(path, "each line must be an object whose 'tokens' is a list of non-empty strings", row.line)
        if tokens:
            sentences.append(tokens)
            lines.append(row.line)
        else:
            empty += 1
    return sentences, lines, empty
