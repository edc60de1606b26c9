"""The inspect stage: one page about a dataset, read before training on it.

    python -m distill inspect --data data/sst2 --out runs/inspect [--key=value ...]

For each split: rows, classes and their balance, and token lengths with the tokenizer the teacher
will use (median, p90, p99, the share over ``max_length``, a suggested max length). Then the
findings: exact and normalised (case, spacing) duplicates within train and between train and dev
(the share of dev rows, hence of dev accuracy points, that training has seen), empty and
near-empty rows, text that looks like a label value, and encoding problems.

Writes ``inspect.json`` (every figure), ``inspect.md`` (one page, warnings first) and
``lengths.png`` (train and dev token lengths, with the max_length line) in ``--out``. Bad rows are
read with ``on_bad_rows=skip`` so that they are reported rather than fatal. The exit status is 2,
with one line, only for what would make training wrong (a dev label training never saw, a split
with no rows, a single class); everything else is a ``warning:`` line and status 0.

The helpers ``token_lengths``, ``truncation_share``, ``duplicates`` and ``label_looking`` are pure
and fast, for the training stages' own one-line warnings (``stage_data_checks``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from distill.artifacts import claim_run_dir
from distill.config import apply_overrides, atomic_save_figure, atomic_write_text
from distill.data import DEFAULT_DATA, MAX_LISTED, BadRow, DataError, Dataset, DataSpec, Split, load_dataset
from distill.modeling import PACKAGED, resolve_model_name
from distill.transfer import normalise_text

LENGTH_CHOICES = (32, 64, 128, 256, 512)  # max lengths a suggestion picks from
# words that are label values in many datasets; a row whose whole text is one of them is suspect
LABEL_WORDS = frozenset({"positive", "negative", "neutral", "pos", "neg", "true", "false", "label"})
LENGTH_SHIFT = 2.0  # warn when one split's median token length is this many times the other's
PAIR_SEPARATOR = "\x1f"  # joins text and text pair into one duplicate key (as distill.data.text_hashes)
# replacement characters, UTF-8 read as cp1252/latin-1 ("Ã©", "â€™", "Â "), control characters
SUSPICIOUS = re.compile("\ufffd|Ã[\u0080-\u00bf]|â€|Â[\u00a0-\u00bf]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class InspectConfig:
    text_column: str = "text"  # column holding the text
    text_pair_column: str | None = None  # second text column for sentence-pair tasks
    label_column: str = "label"  # column holding the label
    encoding: str = "utf-8"  # utf-8, a Python codec, or auto (UTF-8, else cp1252, else latin-1, per file)
    on_bad_rows: str = "skip"  # skip: report bad rows (the default here) | error: stop on them, as training does
    base_model: str = PACKAGED  # whose tokenizer counts tokens: "packaged", a model folder, or a hub name
    max_length: int = 64  # the max length training will use (the quick preset's)
    coverage: float = 0.99  # the suggested max length covers this share of train rows
    truncation_warn: float = 0.01  # warn when more than this share of a split's rows exceed max_length
    near_empty_chars: int = 3  # a row with fewer visible characters than this (or no letter or digit) is near-empty
    imbalance_ratio: float = 5.0  # warn when train's largest class has this many times the smallest's rows
    examples: int = 5  # examples listed per finding

    def data_spec(self, path: str) -> DataSpec:
        return DataSpec(path=path, text_column=self.text_column, text_pair_column=self.text_pair_column,
                        label_column=self.label_column, encoding=self.encoding, on_bad_rows=self.on_bad_rows)


# ---------------------------------------------------------------- reusable checks (pure, fast)


def token_lengths(tokenizer, split: Split, max_length: int | None = None, *, chunk_rows: int = 8192) -> np.ndarray:
    """(R,) int64 tokens per row, special tokens included, as the model sees it (text and pair
    together). ``max_length=None``: untruncated; an int: what truncation at it leaves. A fast
    tokenizer's batch call on chunks: SST-2's 67k rows take a few seconds on one core."""
    lengths = np.empty(len(split), dtype=np.int64)  # (R,)
    for start in range(0, len(split), chunk_rows):
        stop = min(len(split), start + chunk_rows)
        pairs = None if split.text_pairs is None else split.text_pairs[start:stop]
        # verbose=False: rows past the model's limit are the point here, not a warning each
        enc = tokenizer(split.texts[start:stop], pairs, truncation=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)
        lengths[start:stop] = [len(ids) for ids in enc["input_ids"]]
    return lengths if max_length is None else np.minimum(lengths, max_length)


def truncation_share(lengths: np.ndarray, max_length: int) -> float:
    """Share of rows (lengths: (R,)) longer than ``max_length`` tokens; 0.0 for no rows."""
    return float(np.mean(np.asarray(lengths) > max_length)) if len(lengths) else 0.0


def suggest_max_length(lengths: np.ndarray, coverage: float, limit: int | None = None) -> int:
    """The smallest of ``LENGTH_CHOICES`` (those within the model's ``limit``) that at least
    ``coverage`` of the rows (lengths: (R,)) fit in; the largest when none does."""
    choices = [c for c in LENGTH_CHOICES if limit is None or c <= limit] or [int(limit)]
    return next((c for c in choices if np.mean(np.asarray(lengths) <= c) >= coverage), choices[-1])


def _keys(split: Split, normalised: bool) -> list[str]:
    """(R,) the text a duplicate is judged on: text (and pair), raw or case and spacing folded."""
    fold = normalise_text if normalised else str
    if split.text_pairs is None:
        return [fold(t) for t in split.texts]
    return [fold(t) + PAIR_SEPARATOR + fold(p) for t, p in zip(split.texts, split.text_pairs, strict=True)]


def _line(split: Split, i: int) -> int | None:
    return split.line_numbers[i] if split.line_numbers else None


def _shown(split: Split, i: int) -> str:
    return split.texts[i] if split.text_pairs is None else f"{split.texts[i]} ||| {split.text_pairs[i]}"


def _within(split: Split, keys: list[str], raw: list[str], examples: int) -> dict:
    """Rows of ``split`` that repeat an earlier row's key (keys, raw: (R,) as judged, as written).
    Examples: texts with conflicting labels first, then those written in several ways, then the
    most repeated."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    repeated = [rows for rows in groups.values() if len(rows) > 1]
    labels = split.labels
    conflicting = [rows for rows in repeated if labels is not None and len({labels[i] for i in rows}) > 1]
    repeated.sort(key=lambda rows: (labels is None or len({labels[i] for i in rows}) == 1,
                                    -len({raw[i] for i in rows}), -len(rows), rows[0]))
    shown = [{"text": _shown(split, rows[0]), "count": len(rows),
              "variants": sorted({_shown(split, i) for i in rows})[:3],
              "labels": None if labels is None else dict(sorted(Counter(labels[i] for i in rows).items())),
              "lines": [_line(split, i) for i in rows[:examples]], "rows": rows[:examples]}
             for rows in repeated[:examples]]
    extra = sum(len(rows) - 1 for rows in repeated)
    return {"rows": extra, "share": extra / len(split) if len(split) else 0.0, "texts": len(repeated),
            "conflicting_texts": len(conflicting), "examples": shown}


def _leaked(train: Split, dev: Split, train_keys: list[str], dev_keys: list[str], examples: int) -> dict:
    """Dev rows whose key is also a train row's: their share is the share of dev accuracy points
    that training has seen."""
    where: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(train_keys):
        where[key].append(i)
    leaked = [j for j, key in enumerate(dev_keys) if key in where]
    same = [j for j in leaked if dev.labels is not None and train.labels is not None
            and dev.labels[j] in {train.labels[i] for i in where[dev_keys[j]]}]
    shown = [{"text": _shown(dev, j), "dev_line": _line(dev, j), "dev_row": j,
              "dev_label": None if dev.labels is None else dev.labels[j],
              "train_lines": [_line(train, i) for i in where[dev_keys[j]][:examples]],
              "train_labels": None if train.labels is None else
              dict(sorted(Counter(train.labels[i] for i in where[dev_keys[j]]).items()))}
             for j in leaked[:examples]]
    return {"rows": len(leaked), "share_of_dev": len(leaked) / len(dev) if len(dev) else 0.0,
            "same_label": len(same), "examples": shown}


def duplicates(train: Split, dev: Split, *, examples: int = 5) -> dict:
    """Exact and normalised (``normalise_text``: case and spacing folded) duplicates within
    ``train`` and between train and dev. ``train_*``: rows repeating an earlier train row
    (``rows``, ``share``, distinct ``texts``, ``conflicting_texts`` with more than one label);
    ``dev_in_train_*``: dev rows that are also train rows (``rows``, ``share_of_dev`` = the
    share of dev accuracy they represent, ``same_label``). Each with a few examples."""
    out = {}
    train_raw = _keys(train, normalised=False)
    for kind, normalised in (("exact", False), ("normalised", True)):
        train_keys, dev_keys = _keys(train, normalised), _keys(dev, normalised)
        out[f"train_{kind}"] = _within(train, train_keys, train_raw, examples)
        out[f"dev_in_train_{kind}"] = _leaked(train, dev, train_keys, dev_keys, examples)
    return out


def stage_data_checks(*, train: Split, dev: Split, train_lengths: np.ndarray, dev_lengths: np.ndarray,
                      max_length: int, cut: str, deduped: dict[str, int]) -> tuple[dict, list[str]]:
    """What the teacher and student stages say about their data at start, one line each, only
    when it applies: the share of train and dev rows longer than ``max_length`` (lengths: (D,)
    untruncated tokens per row, special tokens included; ``cut`` says what long_text does with
    them), dev rows that are also train rows once normalised (``duplicates``), and what
    ``dedupe`` dropped (``deduped``: Dataset.deduped). Returns (the figures for metrics.json, the
    lines to print)."""
    shares = {name: truncation_share(lengths, max_length) for name, lengths in (("train", train_lengths),
                                                                                 ("dev", dev_lengths))}
    dup = duplicates(train, dev, examples=0)
    leak, repeats = dup["dev_in_train_normalised"], dup["train_normalised"]
    record = {
        "max_length": max_length,
        **{name: {"rows": len(lengths), "over_max_length": int(np.sum(np.asarray(lengths) > max_length)),
                  "over_max_length_share": shares[name]}
           for name, lengths in (("train", train_lengths), ("dev", dev_lengths))},
        "dev_in_train": {"rows": leak["rows"], "share_of_dev": leak["share_of_dev"],
                         "exact_rows": dup["dev_in_train_exact"]["rows"], "same_label": leak["same_label"]},
        "train_repeats": repeats["rows"], "dedupe": deduped or None,
    }
    lines = []
    if shares["train"] > 0 or shares["dev"] > 0:
        lines.append(f"data: {_pct(shares['dev'])} of dev rows and {_pct(shares['train'])} of train rows are longer "
                     f"than max_length {max_length} tokens ({cut}; see `make inspect`)")
    if leak["rows"]:
        lines.append(f"data: {leak['rows']} dev rows ({_pct(leak['share_of_dev'])}) also appear in train (normalised "
                     "text); their dev accuracy flatters every model; --dedupe=true drops them from train")
    if deduped:
        lines.append(f"data: dedupe dropped {deduped['dev_duplicates']} train rows that are also dev rows and "
                     f"{deduped['train_repeats']} that repeat an earlier train row (normalised text)")
    return record, lines


def _label_key(text: str) -> str:
    return normalise_text(text).strip(" .!?'\"")


def label_looking(split: Split, label_names: list[str]) -> list[dict]:
    """Rows whose text (or pair) is a label value: one of ``label_names`` or a common label word
    ("positive", "true", "label", ...) once case, spacing and end punctuation are folded, or a
    fastText ``__label__x`` tag. Each: row, line, text, label, and what it looks like."""
    words = {_label_key(name) for name in label_names} | LABEL_WORDS
    found = []
    for i in range(len(split)):
        for text in (split.texts[i], None if split.text_pairs is None else split.text_pairs[i]):
            key = None if text is None else _label_key(text)
            if key is not None and (key in words or re.fullmatch(r"__label__\S+", key)):
                found.append({"row": i, "line": _line(split, i), "text": text, "looks_like": key,
                              "label": None if split.labels is None else split.labels[i]})
                break
    return found


def near_empty(split: Split, min_chars: int) -> list[int]:
    """Rows whose text (or pair) has fewer than ``min_chars`` visible characters, or no letter
    or digit at all."""
    def thin(text: str) -> bool:
        visible = "".join(text.split())
        return len(visible) < min_chars or not any(c.isalnum() for c in visible)

    return [i for i in range(len(split))
            if thin(split.texts[i]) or (split.text_pairs is not None and thin(split.text_pairs[i]))]


def suspicious_text(split: Split) -> list[int]:
    """Rows holding U+FFFD, mojibake (UTF-8 read as cp1252 / latin-1) or control characters."""
    return [i for i in range(len(split))
            if SUSPICIOUS.search(split.texts[i]) or (split.text_pairs is not None and SUSPICIOUS.search(split.text_pairs[i]))]


# ---------------------------------------------------------------- the report


def _pct(share: float) -> str:
    return f"{100 * share:.3g}%"


def _where(path: str, line: int | None) -> str:
    return path if line is None else f"{path}, line {line}"


def _skip_kind(row: BadRow) -> str:
    if row.reason.startswith("bytes that are not"):
        return "undecodable"
    if row.reason.startswith(("empty text", "empty label", "file is empty")):
        return "empty"
    return "malformed"


def check_fatal(dataset: Dataset) -> None:
    """Raise (one line) for what makes training wrong: a dev label training never saw (dropped
    into ``skipped`` under on_bad_rows=skip), or a split with no rows."""
    unseen = [r for r in dataset.skipped if r.reason.startswith("label ")]
    if unseen:
        more = f" ({len(unseen)} dev rows have labels the training split lacks)" if len(unseen) > 1 else ""
        raise DataError(unseen[0].path, unseen[0].reason + more, unseen[0].line)
    for name, split in (("train", dataset.train), ("dev", dataset.dev)):
        if len(split) == 0:
            raise DataError(split.source, f"the {name} split has no rows")


def _examples(split: Split, rows: list[int], n: int) -> list[dict]:
    return [{"row": i, "line": _line(split, i), "text": _shown(split, i),
             "label": None if split.labels is None else split.labels[i]} for i in rows[:n]]


def _classes(split: Split, names: list[str]) -> dict:
    counts = Counter(split.labels)
    ordered = {name: counts.get(name, 0) for name in names}
    present = [c for c in ordered.values() if c > 0]
    return {"counts": ordered, "shares": {k: v / len(split) for k, v in ordered.items()},
            "majority_share": max(present) / len(split), "missing": [k for k, v in ordered.items() if v == 0],
            "imbalance": max(present) / min(present)}


def _length_stats(lengths: np.ndarray, cfg: InspectConfig, limit: int | None) -> dict:
    q = {p: int(np.quantile(lengths, p / 100, method="inverted_cdf")) for p in (50, 90, 99)}
    over = lengths > cfg.max_length
    return {"median": q[50], "p90": q[90], "p99": q[99], "max": int(lengths.max()), "mean": float(lengths.mean()),
            "over_max_length": int(over.sum()), "over_max_length_share": truncation_share(lengths, cfg.max_length),
            "suggested_max_length": (suggested := suggest_max_length(lengths, cfg.coverage, limit)),
            "suggested_covers": 1.0 - truncation_share(lengths, suggested)}


def build_report(dataset: Dataset, lengths: dict[str, np.ndarray], cfg: InspectConfig, *, data: str,
                 tokenizer_name: str, model_limit: int | None) -> dict:
    """Every figure of the page, and the warnings (one line each). lengths: split -> (R,)."""
    splits = {"train": dataset.train, "dev": dataset.dev}
    names = dataset.label_map.names
    n = cfg.examples
    report: dict = {"data": data, "tokenizer": tokenizer_name, "config": asdict(cfg), "labels": names,
                    "splits": {}, "findings": {}}
    for name, split in splits.items():
        report["splits"][name] = {"source": split.source, "rows": len(split), "classes": _classes(split, names),
                                  "tokens": _length_stats(lengths[name], cfg, model_limit)}
    suggested = report["splits"]["train"]["tokens"]["suggested_max_length"]
    report["suggested_max_length"] = suggested
    findings = report["findings"]
    findings["duplicates"] = duplicates(dataset.train, dataset.dev, examples=n)
    findings["near_empty"], findings["label_looking"], findings["suspicious_text"] = {}, {}, {}
    for name, split in splits.items():
        rows = near_empty(split, cfg.near_empty_chars)
        findings["near_empty"][name] = {"rows": len(rows), "examples": _examples(split, rows, n)}
        looking = label_looking(split, names)
        findings["label_looking"][name] = {"rows": len(looking), "examples": looking[:n]}
        odd = suspicious_text(split)
        findings["suspicious_text"][name] = {"rows": len(odd), "examples": _examples(split, odd, n)}
    files: dict[str, int] = {}  # file -> the order it was read in
    for row in dataset.skipped:
        files.setdefault(row.path, len(files))
    skipped = sorted(dataset.skipped, key=lambda r: (files[r.path], r.line or 0))  # file order, then line
    by_kind: dict[str, list[BadRow]] = {"undecodable": [], "empty": [], "malformed": []}
    for row in skipped:
        by_kind[_skip_kind(row)].append(row)
    findings["skipped"] = {"rows": len(skipped), "by_kind": {k: len(v) for k, v in by_kind.items()},
                           "list": [{"file": r.path, "line": r.line, "reason": r.reason} for r in skipped]}
    findings["fallback_decoded"] = dict(dataset.fallback_decoded)
    report["warnings"] = _warnings(report, by_kind, cfg)
    return report


def _warnings(report: dict, by_kind: dict[str, list[BadRow]], cfg: InspectConfig) -> list[str]:
    out: list[str] = []
    f = report["findings"]
    if by_kind["undecodable"]:
        first = by_kind["undecodable"][0]
        hint = "; --encoding=auto would read them" if cfg.encoding.replace("_", "-").lower() in ("utf-8", "utf8") else ""
        out.append(f"{len(by_kind['undecodable'])} rows skipped: {first.reason} ({_where(first.path, first.line)}"
                   + (", first of them" if len(by_kind["undecodable"]) > 1 else "") + ")" + hint)
    for kind in ("empty", "malformed"):
        if by_kind[kind]:
            first = by_kind[kind][0]
            out.append(f"{len(by_kind[kind])} {kind} rows skipped (first: {_where(first.path, first.line)}: {first.reason})")
    if f["fallback_decoded"]:
        files = f["fallback_decoded"]
        first = next(iter(files))
        out.append(f"{len(files)} files are not UTF-8 and were read as {files[first]} (first: {first})")
    for name in ("train", "dev"):
        odd = f["suspicious_text"][name]
        if odd["rows"]:
            out.append(f"{odd['rows']} {name} rows hold replacement characters, mojibake or control characters "
                       f"(e.g. {_at(odd['examples'][0])})")
    for name in ("train", "dev"):
        tokens = report["splits"][name]["tokens"]
        if tokens["over_max_length_share"] > cfg.truncation_warn:
            covers = report["splits"]["train"]["tokens"]["suggested_covers"]
            capped = (f" (the model's limit: it covers {_pct(covers)} of train rows; see --long_text)"
                      if covers < cfg.coverage else "")
            out.append(f"{_pct(tokens['over_max_length_share'])} of {name} rows are longer than max_length "
                       f"{cfg.max_length} tokens; suggested max_length {report['suggested_max_length']}{capped}")
    medians = [report["splits"][name]["tokens"]["median"] for name in ("train", "dev")]
    if max(medians) >= LENGTH_SHIFT * min(medians):
        out.append(f"dev rows are {'longer' if medians[1] > medians[0] else 'shorter'} than train rows: "
                   f"median {medians[1]} tokens against {medians[0]}")
    dup = f["duplicates"]
    exact, folded = dup["train_exact"], dup["train_normalised"]
    if exact["rows"]:
        out.append(f"{exact['rows']} train rows ({_pct(exact['share'])}) repeat an earlier row exactly "
                   f"({exact['texts']} texts, {exact['conflicting_texts']} of them with conflicting labels)")
    if folded["rows"] > exact["rows"]:
        out.append(f"{folded['rows'] - exact['rows']} more train rows repeat one once case and spacing are folded")
    leak, leak_folded = dup["dev_in_train_exact"], dup["dev_in_train_normalised"]
    if leak_folded["rows"]:
        out.append(f"{leak['rows']} dev rows ({_pct(leak['share_of_dev'])} of dev accuracy) also occur in train "
                   f"exactly, {leak_folded['rows']} ({_pct(leak_folded['share_of_dev'])}) once case and spacing are folded")
    classes = report["splits"]["train"]["classes"]
    if classes["imbalance"] >= cfg.imbalance_ratio:
        counts = classes["counts"]
        out.append(f"train classes are imbalanced: {max(counts, key=counts.get)!r} has {classes['imbalance']:.1f}x "
                   f"the rows of {min(counts, key=counts.get)!r}")
    if report["splits"]["dev"]["classes"]["missing"]:
        out.append(f"dev has no rows of class {', '.join(map(repr, report['splits']['dev']['classes']['missing']))}")
    for name in ("train", "dev"):
        thin = f["near_empty"][name]
        if thin["rows"]:
            out.append(f"{thin['rows']} {name} rows are near-empty (fewer than {cfg.near_empty_chars} visible "
                       f"characters, or no letter or digit; e.g. {_at(thin['examples'][0])})")
    for name in ("train", "dev"):
        looking = f["label_looking"][name]
        if looking["rows"]:
            out.append(f"{looking['rows']} {name} rows look like a label value (e.g. {_at(looking['examples'][0])})")
    return out


def _at(example: dict) -> str:
    where = f"line {example['line']}" if example.get("line") is not None else f"row {example['row']}"
    return f"{example['text'].strip()[:60]!r} at {where}"


def _rows_at(lines: list[int | None], rows: list[int]) -> str:
    return f"lines {', '.join(map(str, lines))}" if lines and lines[0] is not None else f"rows {', '.join(map(str, rows))}"


def _md_cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _coverage_note(report: dict, cfg: dict) -> str:
    """What the suggested max length covers; when even the largest choice the model allows falls
    short of the wanted coverage, say so and name the long-text modes."""
    covers = report["splits"]["train"]["tokens"]["suggested_covers"]
    if covers >= cfg["coverage"]:
        return f"covers {_pct(covers)} of train rows"
    return (f"the model's limit; it covers only {_pct(covers)} of train rows: consider --long_text=head_tail "
            "or --long_text=chunks")


def render_markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [f"# Data inspection: `{report['data']}`", "",
             f"Tokenizer of `{cfg['base_model']}` (`{report['tokenizer']}`), max_length {cfg['max_length']}; suggested max_length "
             f"**{report['suggested_max_length']}** ({_coverage_note(report, cfg)}).", "",
             "## Warnings", ""]
    lines += [f"- {w}" for w in report["warnings"]] or ["none"]
    for name, split in report["splits"].items():
        classes, tokens = split["classes"], split["tokens"]
        lines += ["", f"## {name}: {split['rows']:,} rows (`{split['source']}`)", "", "| class | rows | share |",
                  "|---|---:|---:|"]
        lines += [f"| {_md_cell(k)} | {v:,} | {_pct(classes['shares'][k])} |" for k, v in classes["counts"].items()]
        lines += ["", f"Majority class {_pct(classes['majority_share'])} (the accuracy of always guessing it).", "",
                  "| tokens | median | p90 | p99 | max | mean | over max_length | suggested |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {name} | {tokens['median']} | {tokens['p90']} | {tokens['p99']} | {tokens['max']} | "
                  f"{tokens['mean']:.1f} | {tokens['over_max_length']:,} ({_pct(tokens['over_max_length_share'])}) | "
                  f"{tokens['suggested_max_length']} |"]
    lines += ["", "![token lengths](lengths.png)", "", "## Duplicates", ""]
    dup = report["findings"]["duplicates"]
    for kind in ("exact", "normalised"):
        within, leak = dup[f"train_{kind}"], dup[f"dev_in_train_{kind}"]
        lines += [f"**{kind}**: {within['rows']:,} train rows ({_pct(within['share'])}) repeat an earlier one "
                  f"({within['texts']:,} texts, {within['conflicting_texts']:,} with conflicting labels); "
                  f"{leak['rows']:,} dev rows ({_pct(leak['share_of_dev'])} of dev accuracy) are also train rows, "
                  f"{leak['same_label']:,} with the same label.", ""]
        lines += [f"- {e['count']}x {_md_cell(repr(e['text']))}"
                  + (f" (as {', '.join(_md_cell(repr(v)) for v in e['variants'])})" if len(e["variants"]) > 1 else "")
                  + f", labels {e['labels']}, {_rows_at(e['lines'], e['rows'])}" for e in within["examples"]]
        lines += [f"- dev {_md_cell(repr(e['text']))} ({'line ' + str(e['dev_line']) if e['dev_line'] else 'row ' + str(e['dev_row'])}, "
                  f"label {e['dev_label']}): train labels {e['train_labels']}" for e in leak["examples"]]
        lines += [""]
    findings = report["findings"]
    empty = findings["skipped"]["by_kind"]["empty"]
    sections = (("Empty and near-empty rows", "near_empty", [f"- empty: {empty:,} (skipped; listed under bad rows)"]),
                ("Label-looking text", "label_looking", []),
                ("Replacement characters, mojibake, control characters", "suspicious_text", []))
    for title, key, first in sections:
        lines += [f"## {title}", "", *first]
        for name in ("train", "dev"):
            found = findings[key][name]
            lines += [f"- {name}: {found['rows']:,}" if key != "near_empty" else f"- near-empty in {name}: {found['rows']:,}"]
            lines += [f"  - {_md_cell(_at(e))}, label {e['label']}" for e in found["examples"]]
        lines += [""]
    skipped = findings["skipped"]
    lines += ["## Bad rows (skipped)", "",
              f"{skipped['rows']:,} rows ({', '.join(f'{v} {k}' for k, v in skipped['by_kind'].items())})"
              + ("; training with on_bad_rows=error stops on them." if skipped["rows"] else "."), ""]
    lines += [f"- {_md_cell(_where(r['file'], r['line']))}: {_md_cell(r['reason'])}" for r in skipped["list"][:MAX_LISTED]]
    if skipped["rows"] > MAX_LISTED:
        lines += [f"- ... and {skipped['rows'] - MAX_LISTED:,} more (inspect.json lists every one)"]
    if findings["fallback_decoded"]:
        lines += ["", "Files not in UTF-8, read with a fallback encoding:", ""]
        lines += [f"- {_md_cell(k)}: {v}" for k, v in findings["fallback_decoded"].items()]
    return "\n".join(lines) + "\n"


def plot_lengths(path: Path, lengths: dict[str, np.ndarray], max_length: int, suggested: int) -> Path:
    """Histogram of train and dev token lengths (each as a share of its rows), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = int(max(int(v.max()) for v in lengths.values()))
    bins = np.linspace(0, top + 1, min(top + 2, 81))  # (B + 1,) integer-wide bins up to 80 of them
    fig, axis = plt.subplots(figsize=(7, 3.5))
    for (name, values), color in zip(lengths.items(), ("#2a7", "#c83"), strict=False):
        axis.hist(values, bins=bins, weights=np.full(len(values), 1 / len(values)), histtype="step",
                  linewidth=1.5, color=color, label=f"{name} ({len(values):,} rows)")
    axis.axvline(max_length, color="#555", linestyle="--", label=f"max_length {max_length}")
    if suggested != max_length:
        axis.axvline(suggested, color="#36c", linestyle=":", label=f"suggested {suggested}")
    axis.set_xlabel("tokens per row (special tokens included)")
    axis.set_ylabel("share of rows")
    axis.legend()
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def run(cfg: InspectConfig, data: str, out: Path) -> dict:
    """Read the data, check what would make training wrong (raises), measure, write the page."""
    dataset = load_dataset(cfg.data_spec(data))
    check_fatal(dataset)  # before the slow transformers import: a fatal problem answers at once
    from transformers import AutoTokenizer

    source = resolve_model_name(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    limit = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None  # huge = unset
    lengths = {"train": token_lengths(tokenizer, dataset.train), "dev": token_lengths(tokenizer, dataset.dev)}
    report = build_report(dataset, lengths, cfg, data=data, tokenizer_name=source, model_limit=limit)
    out = claim_run_dir(out, stage="inspect")  # marked: the run directory it sits in can be claimed later
    atomic_write_text(out / "inspect.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "inspect.md", render_markdown(report))
    plot_lengths(out / "lengths.png", lengths, cfg.max_length, report["suggested_max_length"])
    return report


def parse_args(argv: list[str]) -> tuple[InspectConfig, str, Path]:
    parser = argparse.ArgumentParser(prog="python -m distill inspect", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="dataset directory (train + dev) or hub name")
    parser.add_argument("--out", default="runs/inspect", help="where inspect.{md,json} and lengths.png go")
    args, overrides = parser.parse_known_args(argv)
    return apply_overrides(InspectConfig(), overrides), args.data, Path(args.out)


def main(argv: list[str]) -> int:
    cfg, data, out = parse_args(argv)
    report = run(cfg, data, out)
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    rows = ", ".join(f"{name} {split['rows']:,} rows" for name, split in report["splits"].items())
    print(f"inspect: {rows}; suggested max_length {report['suggested_max_length']}; "
          f"{len(report['warnings'])} warnings; {out / 'inspect.md'}")
    return 0
