"""distill.inspect: the data page, on small planted datasets (exact counts) and on SST-2 (known facts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distill import inspect as inspect_stage
from distill.data import DataError, DataSpec, Split, load_dataset

REPO = Path(__file__).resolve().parents[1]
LONG = "word " * 100  # 102 tokens with [CLS] and [SEP] ("word" is one MiniLM token)


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def tsv_set(root: Path, dev_rows: list[str] | None = None) -> Path:
    """Train (file lines in comments): 10 usable rows, 2 bad ones; dev: 4 rows, 2 seen in train."""
    write(root / "train.tsv", "\n".join([
        "text\tlabel",
        "a fine film\t1",  # 2
        "a fine film\t1",  # 3  exact duplicate of line 2
        "A  Fine   FILM\t1",  # 4  normalised duplicate of line 2
        "bad movie\t0",  # 5
        "bad movie\t1",  # 6  exact duplicate of line 5, conflicting label
        "positive\t1",  # 7  looks like a label
        "ok\t0",  # 8  near-empty (2 visible characters)
        f"{LONG}\t0",  # 9  102 tokens: over max_length 64
        "\t1",  # 10 empty text: skipped
        "a\tb\tc",  # 11 three fields: skipped
        "the plot is thin\t0",  # 12
        "great acting throughout\t1",  # 13
    ]) + "\n")
    dev = dev_rows or ["a fine film\t1", "BAD movie\t0", "something new entirely\t1", "another fresh sentence\t0"]
    write(root / "dev.tsv", "\n".join(["text\tlabel", *dev]) + "\n")
    return root


def folder_set(root: Path) -> Path:
    """Class folders: train has a Latin-1 file and an empty file (both skipped under UTF-8)."""
    for name, text in {
        "train/neg/n1.txt": "a dull and tired story\n",
        "train/neg/n2.txt": "a dull and tired story\n",  # exact duplicate
        "train/neg/n3.txt": "",  # empty file
        "train/neg/n4.txt": "boring",
        "train/pos/p1.txt": "a warm and funny film",
        "train/pos/p2.txt": "un caf\xe9 charmant".encode("latin-1"),  # not UTF-8 at byte 6
        "train/pos/p3.txt": "A WARM and funny  film",  # normalised duplicate of p1
        "train/pos/p4.txt": "neg",  # looks like a label
        "dev/neg/d1.txt": "a dull and tired story",  # in train
        "dev/neg/d2.txt": "not good at all",
        "dev/pos/d3.txt": "lovely",
        "dev/pos/d4.txt": "a warm and funny film",  # in train
    }.items():
        write(root / name, text)
    return root


def run(data: Path, out: Path, minilm_path, *overrides: str) -> dict:
    cfg = inspect_stage.InspectConfig(base_model=str(minilm_path))
    cfg = inspect_stage.apply_overrides(cfg, list(overrides))
    return inspect_stage.run(cfg, str(data), out)


def test_tsv_counts_lengths_and_outputs(tmp_path, minilm_path):
    data = tsv_set(tmp_path / "tsv")
    report = run(data, tmp_path / "out", minilm_path)
    train, dev = report["splits"]["train"], report["splits"]["dev"]
    assert (train["rows"], dev["rows"]) == (10, 4)
    assert train["classes"]["counts"] == {"0": 4, "1": 6}
    assert train["classes"]["majority_share"] == pytest.approx(0.6)
    assert train["tokens"]["max"] == 102 and train["tokens"]["over_max_length"] == 1
    assert train["tokens"]["over_max_length_share"] == pytest.approx(0.1)
    assert report["suggested_max_length"] == 128  # 99% of rows: the 102-token row must fit
    assert dev["tokens"]["over_max_length"] == 0

    dup = report["findings"]["duplicates"]
    assert (dup["train_exact"]["rows"], dup["train_exact"]["texts"], dup["train_exact"]["conflicting_texts"]) == (2, 2, 1)
    assert (dup["train_normalised"]["rows"], dup["train_normalised"]["texts"]) == (3, 2)
    assert dup["train_exact"]["examples"][0]["text"] == "bad movie"  # conflicting labels listed first
    assert dup["train_exact"]["examples"][0]["lines"] == [5, 6]
    assert (dup["dev_in_train_exact"]["rows"], dup["dev_in_train_exact"]["share_of_dev"]) == (1, 0.25)
    assert (dup["dev_in_train_normalised"]["rows"], dup["dev_in_train_normalised"]["share_of_dev"]) == (2, 0.5)
    assert dup["dev_in_train_normalised"]["same_label"] == 2
    assert dup["dev_in_train_normalised"]["examples"][1]["dev_line"] == 3

    findings = report["findings"]
    assert [e["line"] for e in findings["near_empty"]["train"]["examples"]] == [8]
    assert [(e["line"], e["looks_like"]) for e in findings["label_looking"]["train"]["examples"]] == [(7, "positive")]
    assert findings["skipped"]["by_kind"] == {"undecodable": 0, "empty": 1, "malformed": 1}
    assert [r["line"] for r in findings["skipped"]["list"]] == [10, 11]

    warnings = report["warnings"]
    assert "10% of train rows are longer than max_length 64 tokens; suggested max_length 128" in warnings
    assert any(w.startswith("1 dev rows (25% of dev accuracy) also occur in train exactly, 2 (50%)") for w in warnings)
    assert any(w.startswith("1 empty rows skipped") and "train.tsv, line 10" in w for w in warnings)

    out = tmp_path / "out"
    assert json.loads((out / "inspect.json").read_text())["warnings"] == warnings
    page = (out / "inspect.md").read_text()
    assert page.index("## Warnings") < page.index("## train") and "suggested max_length **128**" in page
    assert (out / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".distill-run"]  # the marker; no temp files

    looser = run(data, tmp_path / "out2", minilm_path, "--coverage=0.9", "--max_length=128")
    assert looser["suggested_max_length"] == 32
    assert not any("longer than max_length" in w for w in looser["warnings"])


def test_long_dev_rows_warn(tmp_path, minilm_path):
    long_dev = [f"{LONG}\t1", f"{LONG} and more\t0"]  # 102 and 104 tokens; train's median is 5
    report = run(tsv_set(tmp_path / "tsv", long_dev), tmp_path / "out", minilm_path)
    assert "100% of dev rows are longer than max_length 64 tokens; suggested max_length 128" in report["warnings"]
    assert "dev rows are longer than train rows: median 102 tokens against 5" in report["warnings"]


def test_class_folders_encoding_and_empty_file(tmp_path, minilm_path):
    data = folder_set(tmp_path / "folders")
    report = run(data, tmp_path / "out", minilm_path)
    assert (report["splits"]["train"]["rows"], report["splits"]["dev"]["rows"]) == (6, 4)
    skipped = report["findings"]["skipped"]
    assert skipped["by_kind"] == {"undecodable": 1, "empty": 1, "malformed": 0}
    assert {Path(r["file"]).name: r["reason"] for r in skipped["list"]} == {
        "n3.txt": "file is empty", "p2.txt": "bytes that are not UTF-8 at byte 6"}
    dup = report["findings"]["duplicates"]
    assert (dup["train_exact"]["rows"], dup["train_normalised"]["rows"]) == (1, 2)
    assert (dup["dev_in_train_exact"]["rows"], dup["dev_in_train_exact"]["share_of_dev"]) == (2, 0.5)
    assert report["findings"]["label_looking"]["train"]["rows"] == 1
    assert report["findings"]["label_looking"]["train"]["examples"][0]["label"] == "pos"
    assert any("p2.txt" in w and "--encoding=auto" in w for w in report["warnings"])

    auto = run(data, tmp_path / "auto", minilm_path, "--encoding=auto")
    assert auto["splits"]["train"]["rows"] == 7
    assert {Path(k).name: v for k, v in auto["findings"]["fallback_decoded"].items()} == {"p2.txt": "cp1252"}
    assert any(w.startswith("1 files are not UTF-8 and were read as cp1252") for w in auto["warnings"])


def test_unseen_dev_label_exits_2_with_one_line(tmp_path, minilm_path):
    data = tsv_set(tmp_path / "tsv", ["a fine film\t1", "a new label\t2", "BAD movie\t0"])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "distill", "inspect", "--data", str(data), "--out", str(out),
         f"--base_model={minilm_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {data / 'dev.tsv'}, line 3: label '2' never appears in the training split (known labels: 0, 1)"]
    assert not out.exists()


def test_split_without_rows_is_an_error(tmp_path, minilm_path):
    data = tsv_set(tmp_path / "tsv")
    write(data / "dev.tsv", "text\tlabel\n")
    with pytest.raises(DataError, match="dev.tsv.*no rows"):
        inspect_stage.main(["--data", str(data), "--out", str(tmp_path / "out"), f"--base_model={minilm_path}"])


def test_helpers(minilm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    split = Split(texts=["a b c", LONG, "Positive!"], labels=["0", "1", "1"], source="mem",
                  text_pairs=["d e f", "g", "h i j"], line_numbers=[2, 3, 4])
    lengths = inspect_stage.token_lengths(tokenizer, split, chunk_rows=2)  # chunks of 2 rows
    assert lengths.tolist() == [9, 104, 8]  # [CLS] a b c [SEP] d e f [SEP]: a pair counts together
    assert inspect_stage.token_lengths(tokenizer, split, max_length=64).tolist() == [9, 64, 8]
    assert inspect_stage.truncation_share(lengths, 64) == pytest.approx(1 / 3)
    assert inspect_stage.truncation_share(np.zeros(0), 64) == 0.0
    assert inspect_stage.suggest_max_length(np.array([10] * 99 + [300]), 0.99) == 32
    assert inspect_stage.suggest_max_length(np.array([10] * 98 + [300] * 2), 0.99) == 512
    assert inspect_stage.suggest_max_length(np.array([900]), 0.99, limit=256) == 256
    assert [r["row"] for r in inspect_stage.label_looking(split, ["0", "1"])] == [2]
    assert inspect_stage.near_empty(split, 3) == [1]  # pair "g": one visible character


def test_sst2_known_facts(sst2_dir):
    """The repo's SST-2, without the tokenizer (about 2 s): sizes, duplicates, no dev leak."""
    data = load_dataset(DataSpec(str(sst2_dir), on_bad_rows="skip"))
    assert (len(data.train), len(data.dev), data.skipped) == (67349, 872, [])
    dup = inspect_stage.duplicates(data.train, data.dev)
    assert dup["train_exact"]["rows"] == 371 and dup["dev_in_train_normalised"]["rows"] == 0
    assert len(inspect_stage.label_looking(data.train, data.label_map.names)) == 4


def test_a_suggestion_capped_by_the_model_says_what_it_covers(tmp_path, minilm_path):
    # 3 of 4 train rows are 602 tokens, over the model's 512: no choice covers 99%
    rows = [f"{LONG * 6}\t{i % 2}" for i in range(3)] + ["short\t1"]
    write(tmp_path / "d" / "train.tsv", "\n".join(["text\tlabel", *rows]) + "\n")
    write(tmp_path / "d" / "dev.tsv", "text\tlabel\nshort one\t0\nother\t1\n")
    report = run(tmp_path / "d", tmp_path / "out", minilm_path)
    tokens = report["splits"]["train"]["tokens"]
    assert report["suggested_max_length"] == 512 and tokens["suggested_covers"] == pytest.approx(0.25)
    page = (tmp_path / "out" / "inspect.md").read_text()
    assert "**512** (the model's limit; it covers only 25% of train rows: consider --long_text=head_tail" in page
    assert "75% of train rows are longer than max_length 64 tokens; suggested max_length 512 (the model's limit: " \
           "it covers 25% of train rows; see --long_text)" in report["warnings"]
