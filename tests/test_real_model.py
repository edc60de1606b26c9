"""The real packaged all-MiniLM-L6-v2 through the teacher stage and the cache, on a few dozen
SST-2 sentences (about half a minute on 2 cores)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from distill.cache import fingerprint_parts, open_logit_cache
from distill.data import DataSpec, load_dataset
from distill.modeling import PACKAGED, load_classifier
from distill.tokens import encode
from distill.trainer import predict_logits
from teachers.finetune import TeacherConfig
from teachers.finetune import run as run_teacher


@pytest.mark.slow
def test_packaged_minilm_trains_caches_and_reloads(tmp_path, sst2_dir):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for split, rows in (("train", 48), ("dev", 32)):
        lines = gzip.decompress((sst2_dir / f"{split}.tsv.gz").read_bytes()).decode().splitlines(keepends=True)
        (data_dir / f"{split}.tsv").write_text("".join(lines[: rows + 1]))
    cfg = TeacherConfig(data=str(data_dir), base_model=PACKAGED, max_length=48, epochs=1, batch_size=16,
                        lr=5e-5, progress=False, cache_dtype="float16")
    metrics = run_teacher(cfg, tmp_path / "run")
    teacher = tmp_path / "run" / "teacher"

    assert metrics["parameters"] == 22_713_986  # MiniLM-L6-H384 + a 2-way head
    assert json.loads((teacher / "config.json").read_text())["num_hidden_layers"] == 6
    data = load_dataset(DataSpec(path=str(data_dir)))
    cache = open_logit_cache(teacher / "logits", "train", expected_parts=fingerprint_parts(
        teacher_dir=teacher, max_length=48, data_files=data.files, split=data.train))
    cache.check_rows(data.train)
    assert cache.logits.dtype == np.float16 and cache.logits.shape == (48, 2)

    # the cache holds what the saved teacher computes, to fp16 precision
    model = load_classifier(str(teacher), id2label=data.label_map.id2label)
    from transformers import AutoTokenizer

    encoded = encode(AutoTokenizer.from_pretrained(teacher), data.train, data.label_map.encode(data.train), 48)
    fresh = predict_logits(model, encoded, batch_size=16, device=model.device)
    np.testing.assert_allclose(cache.logits.astype(np.float32), fresh, atol=2e-3, rtol=2e-3)
    assert np.abs(fresh[:, 0] - fresh[:, 1]).max() > 1e-3  # the head is not degenerate
