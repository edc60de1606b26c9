"""distill.augment: variants are deterministic per (seed, row, variant), differ from their sentence,
and use only the sentence's own words and the mask token."""

from __future__ import annotations

import numpy as np

from distill.augment import AugmentConfig, augment_rows, augment_text

TEXTS = ["a gorgeous , witty , seductive movie .", "the film is strictly routine .", "bad", "one two"]


def test_deterministic_and_independent_of_other_rows():
    a, src = augment_rows(TEXTS, factor=3, seed=7, mask_token="[MASK]")
    b, _ = augment_rows(TEXTS, factor=3, seed=7, mask_token="[MASK]")
    assert a == b and len(a) == 12
    np.testing.assert_array_equal(src, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    alone, _ = augment_rows(TEXTS[1:2], factor=3, seed=7, mask_token="[MASK]")
    assert alone != a[3:6]  # row index is part of the seed ...
    c, _ = augment_rows(TEXTS, factor=3, seed=8, mask_token="[MASK]")
    assert c != a  # ... and so is the seed


def test_variants_use_the_sentence_words_and_differ_from_it():
    variants, src = augment_rows(TEXTS * 25, factor=4, seed=0, mask_token="[MASK]")
    for text, i in zip(variants, src, strict=True):
        original = (TEXTS * 25)[i]
        assert text and set(text.split()) <= set(original.split()) | {"[MASK]"}
        if len(original.split()) >= 5:  # short ones may (rarely) come out unchanged after every redraw
            assert text != original
    assert any("[MASK]" in v for v in variants)
    assert any(len(v.split()) < len((TEXTS * 25)[i].split()) for v, i in zip(variants, src, strict=True))


def test_a_config_that_changes_nothing_returns_the_sentence():
    never = AugmentConfig(p_mask=0, p_drop=0, p_swap=0, p_ngram=0)
    assert augment_text("same words", np.random.default_rng(0), mask_token="<mask>", config=never) == "same words"
    only_drop = AugmentConfig(p_mask=0, p_drop=1, p_swap=0, p_ngram=0)  # every word dropped: the mask stands in
    assert augment_text("gone", np.random.default_rng(0), mask_token="<mask>", config=only_drop) == "<mask>"
