"""Text augmentation that needs no external resource (Tang et al. 2019, "Distilling Task-Specific
Knowledge from BERT into Simple Neural Networks", without the POS tagger): each variant of a
sentence masks some words, drops some, swaps some neighbours, and sometimes keeps only an n-gram.

The teacher scores every variant; the student learns the teacher's outputs on them (KD-only rows,
no hard label). Variant ``k`` of row ``i`` depends only on (seed, i, k), so any subset of the rows
regenerates exactly, and the variants are fingerprinted like any other cached text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    p_mask: float = 0.1  # each word becomes the mask token
    p_drop: float = 0.1  # each word is dropped
    p_swap: float = 0.1  # each word swaps places with the next one
    p_ngram: float = 0.25  # the variant keeps only a random n-gram (n in 1..max_ngram)
    max_ngram: int = 5  # longest n-gram kept
    tries: int = 10  # redraws when a variant comes out equal to its sentence (or empty)


def augment_text(text: str, rng: np.random.Generator, *, mask_token: str, config: AugmentConfig) -> str:
    """One variant of ``text``. Words are whitespace-separated tokens."""
    words = text.split()
    for _ in range(config.tries):
        out = []
        for word in words:
            r = rng.random()
            if r < config.p_mask:
                out.append(mask_token)
            elif r >= config.p_mask + config.p_drop:
                out.append(word)
        for i in range(len(out) - 1):
            if rng.random() < config.p_swap:
                out[i], out[i + 1] = out[i + 1], out[i]
        if out and rng.random() < config.p_ngram:
            n = int(rng.integers(1, min(config.max_ngram, len(out)) + 1))
            start = int(rng.integers(0, len(out) - n + 1))
            out = out[start:start + n]
        variant = " ".join(out)
        if variant and variant != " ".join(words):
            return variant
    return variant or mask_token  # a one-word sentence may have no other variant


def augment_rows(texts: list[str], *, factor: int, seed: int, mask_token: str,
                 config: AugmentConfig = AugmentConfig()) -> tuple[list[str], np.ndarray]:
    """``factor`` variants of every text, variant-major within each row: returns (variants
    (R * factor,), source row of each (R * factor,) int64)."""
    variants, sources = [], np.repeat(np.arange(len(texts), dtype=np.int64), factor)
    for i, text in enumerate(texts):
        for k in range(factor):
            rng = np.random.default_rng([seed, i, k])
            variants.append(augment_text(text, rng, mask_token=mask_token, config=config))
    return variants, sources
