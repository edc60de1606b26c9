"""Transfer sets: label-free text the teacher scores once, so the student can learn the teacher's
outputs on far more rows than the labelled ones.

Sources (the teacher's ``--transfer`` list):

    unused_train   the training rows the teacher did not train on (``max_train_rows`` left them
                   out); their labels are dropped
    unlabeled      the dataset directory's ``unlabeled.*`` or ``test_unlabeled.*`` file, if it has one
    augmented      ``augment_factor`` variants of every labelled training row (distill/augment.py)
    <path>         a ``.txt`` file (one example per line), a TSV / CSV / JSONL table (its text column),
                   or a folder of ``.txt`` files; each may be gzipped

``unused_train``, ``unlabeled`` and ``augmented`` are optional: a dataset without them is skipped
with one line saying so. A path is required to exist. Every source drops rows whose text (case and
spacing aside) is also a dev row, so no dev row leaks into training, and counts what it dropped.

A source is recorded in the teacher's ``distill.json`` as a small dict; ``read_transfer`` turns
that dict back into exactly the rows the teacher scored, for any later stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.augment import augment_rows
from distill.data import (
    DataError,
    Dataset,
    DataSpec,
    Split,
    base_suffix,
    find_optional,
    normalise_text,
    read_texts,
)
from distill.ner_data import NerDataset, NerSpec

UNUSED_TRAIN = "unused_train"
UNLABELED = "unlabeled"
AUGMENTED = "augmented"
UNLABELED_FILES = ("unlabeled", "test_unlabeled")  # names looked for in the dataset directory
DEFAULT_TEXT_COLUMNS = ("text", "sentence")  # tried after the dataset's own text column


def source_name(path: Path) -> str:
    """``runs/x/more.txt.gz`` -> ``more``; a folder -> its name."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name[: -len(base_suffix(Path(name)))] if base_suffix(Path(name)) else name


def resolve_sources(requested: list[str], *, spec: DataSpec | NerSpec, dataset: Dataset | NerDataset,
                    file_keys: dict, max_rows: int | None, augment_factor: int, mask_token: str,
                    seed: int) -> tuple[dict[str, dict], list[str]]:
    """The sources to score, name -> source dict, and one note per optional source skipped.
    ``file_keys``: what a file source records of how to read it (classification:
    ``{"text_column": <column or None>}``; the NER stages record how a line splits into words:
    distill/ner_transfer.py)."""
    sources: dict[str, dict] = {}
    notes: list[str] = []
    common = {"max_rows": max_rows, "seed": seed}
    how = file_keys
    for item in requested:
        if item == UNUSED_TRAIN:
            if dataset.unused_train is None or len(dataset.unused_train) == 0:
                notes.append(f"transfer {UNUSED_TRAIN}: the teacher trains on every training row; none left over (skipped)")
                continue
            name, source = UNUSED_TRAIN, {"kind": UNUSED_TRAIN}
        elif item == UNLABELED:
            directory = Path(spec.path).expanduser()
            found = find_optional(directory, UNLABELED_FILES) if directory.is_dir() else None
            if found is None:
                notes.append(f"transfer {UNLABELED}: {spec.path} has no "
                             f"{' or '.join(n + '.*' for n in UNLABELED_FILES)} file (skipped)")
                continue
            name, source = source_name(found), {"kind": "file", "path": str(found.resolve()), **how}
        elif item == AUGMENTED:
            if augment_factor <= 0:
                notes.append(f"transfer {AUGMENTED}: augment_factor is 0 (skipped)")
                continue
            name, source = AUGMENTED, {"kind": AUGMENTED, "factor": augment_factor, "mask_token": mask_token}
        else:
            path = Path(item).expanduser()
            if not path.exists():
                raise DataError(path, f"transfer source not found (expected a file, a folder, or one of "
                                      f"{UNUSED_TRAIN}, {UNLABELED}, {AUGMENTED})")
            name, source = source_name(path), {"kind": "file", "path": str(path.resolve()), **how}
        if name in sources or name == "train":
            raise DataError(item, f"two transfer sources would share the cache name {name!r}; rename one file")
        sources[name] = {**source, **common}
    return sources, notes


def read_transfer(source: dict, *, dataset: Dataset, spec: DataSpec) -> tuple[Split, dict[str, int]]:
    """The rows a source dict describes (label-free), after dropping dev duplicates and capping at
    ``max_rows`` (a seeded sample, file order kept). Returns the rows and the counts of what was
    read, skipped and dropped. Deterministic: the teacher and every student get the same rows."""
    kind = source["kind"]
    if kind == UNUSED_TRAIN:
        if dataset.unused_train is None:
            raise DataError(spec.path, "the transfer set 'unused_train' needs training rows the teacher left out")
        rows = dataset.unused_train
        split, counts = Split(texts=rows.texts, labels=None, source=f"{rows.source} (rows the teacher did not train on)",
                              text_pairs=rows.text_pairs, line_numbers=rows.line_numbers), {"empty": 0}
    elif kind == AUGMENTED:
        texts, origin = augment_rows(dataset.train.texts, factor=source["factor"], seed=source["seed"],
                                     mask_token=source["mask_token"])
        pairs = None if dataset.train.text_pairs is None else [dataset.train.text_pairs[i] for i in origin]
        split, counts = Split(texts=texts, labels=None, source=f"{dataset.train.source} (x{source['factor']} augmented)",
                              text_pairs=pairs), {"empty": 0}
    elif kind == "file":
        if spec.text_pair_column:
            raise DataError(source["path"], "transfer files hold single texts; this dataset has sentence pairs "
                                            f"({spec.text_column}, {spec.text_pair_column})")
        split, counts = read_texts(source["path"], text_column=source["text_column"],
                                   default_columns=(spec.text_column, *DEFAULT_TEXT_COLUMNS), encoding=spec.encoding)
    else:
        raise DataError(spec.path, f"unknown transfer source kind {kind!r}")
    keep, dropped_dev = select_rows([normalise_text(t) for t in split.texts], {normalise_text(t) for t in dataset.dev.texts},
                                    source, where=split.source)
    return split.subset(keep), {"read": len(split), "skipped_empty": counts["empty"], "dropped_dev": dropped_dev,
                                "rows": len(keep)}


def select_rows(keys: list[str], dev_keys: set[str], source: dict, *, where: str) -> tuple[np.ndarray, int]:
    """(the rows kept, how many were dropped as dev rows) of a transfer source whose rows have the
    duplicate ``keys`` (R,): rows whose key is a dev row's are dropped, then at most
    ``source["max_rows"]`` are kept (a sample seeded by ``source["seed"]``, file order kept)."""
    keep = np.array([i for i, key in enumerate(keys) if key not in dev_keys], dtype=np.int64)
    dropped_dev = len(keys) - len(keep)
    if source.get("max_rows") is not None and len(keep) > source["max_rows"]:
        rng = np.random.default_rng(source["seed"])
        keep = np.sort(rng.choice(keep, size=source["max_rows"], replace=False))
    if len(keep) == 0:
        raise DataError(where, "no transfer rows left (every row was empty or also a dev row)")
    return keep, dropped_dev
