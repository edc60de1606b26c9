"""distill.tokens: flat token arrays equal the tokenizer's own output, batches pad correctly, and the
memory-mapped store is reused only when its key matches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.data import Split
from distill.tokens import concat, encode

TEXTS = ["a short one", "a somewhat longer sentence than the first one", "x", "the fourth row here"]


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.mark.parametrize("chunk_rows", [1, 3, 100])
def test_encode_matches_the_tokenizer(tokenizer, chunk_rows):
    split = Split(texts=TEXTS, labels=None, source="mem")
    enc = encode(tokenizer, split, np.arange(4), 8, chunk_rows=chunk_rows)
    want = tokenizer(TEXTS, truncation=True, max_length=8)["input_ids"]
    assert len(enc) == 4 and enc.type_ids is None
    assert [enc.row(i).tolist() for i in range(4)] == want
    np.testing.assert_array_equal(enc.lengths, [len(w) for w in want])
    assert enc.ids.dtype == np.int32 and enc.offsets.dtype == np.int64


def test_batch_pads_and_masks(tokenizer):
    split = Split(texts=TEXTS, labels=None, source="mem")
    enc = encode(tokenizer, split, np.zeros(4, dtype=np.int64), 16)
    batch = enc.batch(np.array([2, 0]), torch.device("cpu"))
    want = tokenizer([TEXTS[2], TEXTS[0]], padding=True, truncation=True, max_length=16, return_tensors="pt")
    assert torch.equal(batch["input_ids"], want["input_ids"])
    assert torch.equal(batch["attention_mask"], want["attention_mask"])
    assert "token_type_ids" not in batch  # single sentences: the model's default (all 0) is used


def test_pairs_keep_segment_ids(tokenizer):
    split = Split(texts=["first part", "q"], labels=None, source="mem", text_pairs=["second part here", "a"])
    enc = encode(tokenizer, split, np.zeros(2, dtype=np.int64), 32)
    want = tokenizer(split.texts, split.text_pairs, padding=True, return_tensors="pt")
    batch = enc.batch(np.array([0, 1]), torch.device("cpu"))
    assert torch.equal(batch["token_type_ids"], want["token_type_ids"])
    assert torch.equal(batch["input_ids"], want["input_ids"])


def test_slice_and_concat(tokenizer):
    split = Split(texts=TEXTS, labels=None, source="mem")
    enc = encode(tokenizer, split, np.arange(4), 16)
    a, b = enc.slice(0, 1), enc.slice(1, 4)
    assert [b.row(i).tolist() for i in range(3)] == [enc.row(i).tolist() for i in range(1, 4)]
    joined = concat([a, b])
    np.testing.assert_array_equal(joined.ids, enc.ids)
    np.testing.assert_array_equal(joined.offsets, enc.offsets)
    np.testing.assert_array_equal(joined.labels, enc.labels)


def test_store_is_memory_mapped_reused_and_rebuilt(tokenizer, tmp_path):
    split = Split(texts=TEXTS * 50, labels=None, source="mem")
    in_memory = encode(tokenizer, split, np.zeros(len(split), dtype=np.int64), 12, chunk_rows=7)
    stored = encode(tokenizer, split, np.zeros(len(split), dtype=np.int64), 12, chunk_rows=7, store=tmp_path / "s")
    assert isinstance(stored.ids, np.memmap)
    np.testing.assert_array_equal(stored.ids, in_memory.ids)
    np.testing.assert_array_equal(stored.offsets, in_memory.offsets)
    before = (tmp_path / "s" / "ids.bin").stat().st_mtime_ns
    encode(tokenizer, split, np.zeros(len(split), dtype=np.int64), 12, store=tmp_path / "s")
    assert (tmp_path / "s" / "ids.bin").stat().st_mtime_ns == before  # same key: reused
    other = encode(tokenizer, split, np.zeros(len(split), dtype=np.int64), 4, store=tmp_path / "s")
    assert int(other.lengths.max()) == 4  # another max length: rebuilt
    changed = Split(texts=["new text"] + split.texts[1:], labels=None, source="mem")
    rebuilt = encode(tokenizer, changed, np.zeros(len(changed), dtype=np.int64), 4, store=tmp_path / "s")
    assert rebuilt.row(0).tolist() == tokenizer("new text", truncation=True, max_length=4)["input_ids"]
    assert not (tmp_path / "s.tmp").exists()
