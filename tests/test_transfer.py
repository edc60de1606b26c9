"""distill.transfer: which sources resolve (and which are skipped with a note), the rows each reads
back (dev duplicates dropped, caps seeded), and that a source dict re-reads the same rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from distill.data import DataError, DataSpec, load_dataset
from distill.transfer import normalise_text, read_transfer, resolve_sources, source_name


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path) -> Path:
    rows = [f"train sentence {i}\t{i % 2}" for i in range(20)] + ["A Dev  Sentence\t1"]  # a dev row, re-spaced
    write(tmp_path / "d" / "train.tsv", "text\tlabel\n" + "\n".join(rows) + "\n")
    write(tmp_path / "d" / "dev.tsv", "text\tlabel\na dev sentence\t1\nanother dev row\t0\n")
    return tmp_path / "d"


def resolve(spec, dataset, requested, **kw):
    args = dict(file_keys={"text_column": None}, max_rows=None, augment_factor=0, mask_token="[MASK]", seed=0) | kw
    return resolve_sources(requested, spec=spec, dataset=dataset, **args)


def test_optional_sources_are_skipped_with_a_note(data_dir):
    spec = DataSpec(path=str(data_dir))
    sources, notes = resolve(spec, load_dataset(spec), ["unused_train", "unlabeled", "augmented"])
    assert sources == {}
    assert len(notes) == 3
    assert "every training row" in notes[0] and "unlabeled.* or test_unlabeled.*" in notes[1]
    assert "augment_factor is 0" in notes[2]


def test_unused_train_drops_dev_duplicates_and_labels(data_dir):
    spec = DataSpec(path=str(data_dir), max_train_rows=6, seed=3)
    data = load_dataset(spec)
    sources, notes = resolve(spec, data, ["unused_train"])
    assert notes == [] and sources["unused_train"]["kind"] == "unused_train"
    split, counts = read_transfer(sources["unused_train"], dataset=data, spec=spec)
    assert split.labels is None
    in_dev = int("A Dev  Sentence" in data.unused_train.texts)
    assert counts == {"read": 15, "skipped_empty": 0, "dropped_dev": in_dev, "rows": 15 - in_dev}
    assert not {normalise_text(t) for t in split.texts} & {normalise_text(t) for t in data.dev.texts}
    assert not set(split.texts) & set(data.train.texts)  # the teacher's own rows are not in it


def test_files_folders_and_the_dataset_unlabeled_file(data_dir, tmp_path):
    write(data_dir / "test_unlabeled.tsv", "index\tsentence\n0\tfirst unlabeled\n1\tanother dev row\n2\tthird\n")
    (tmp_path / "more.txt.gz").write_bytes(gzip.compress(b"line one\n\nline two\n"))
    write(tmp_path / "docs" / "a.txt", "doc a\n")
    spec = DataSpec(path=str(data_dir))
    data = load_dataset(spec)
    sources, notes = resolve(spec, data, ["unlabeled", str(tmp_path / "more.txt.gz"), str(tmp_path / "docs")])
    assert list(sources) == ["test_unlabeled", "more", "docs"] and notes == []
    split, counts = read_transfer(sources["test_unlabeled"], dataset=data, spec=spec)
    assert split.texts == ["first unlabeled", "third"] and counts["dropped_dev"] == 1  # column "sentence" found
    split, counts = read_transfer(sources["more"], dataset=data, spec=spec)
    assert split.texts == ["line one", "line two"] and counts["skipped_empty"] == 1
    assert read_transfer(sources["docs"], dataset=data, spec=spec)[0].texts == ["doc a"]


def test_cap_is_a_seeded_sample_in_file_order(data_dir, tmp_path):
    lines = [f"row {i}" for i in range(100)]
    path = write(tmp_path / "big.txt", "\n".join(lines) + "\n")
    spec = DataSpec(path=str(data_dir))
    data = load_dataset(spec)
    first = read_transfer(resolve(spec, data, [str(path)], max_rows=10, seed=1)[0]["big"], dataset=data, spec=spec)[0]
    again = read_transfer(resolve(spec, data, [str(path)], max_rows=10, seed=1)[0]["big"], dataset=data, spec=spec)[0]
    other = read_transfer(resolve(spec, data, [str(path)], max_rows=10, seed=2)[0]["big"], dataset=data, spec=spec)[0]
    assert first.texts == again.texts != other.texts and len(first) == 10
    assert first.texts == sorted(first.texts, key=lines.index)


def test_augmented_rows_come_from_the_labelled_rows(data_dir):
    spec = DataSpec(path=str(data_dir), max_train_rows=5)
    data = load_dataset(spec)
    sources, _ = resolve(spec, data, ["augmented"], augment_factor=3)
    split, counts = read_transfer(sources["augmented"], dataset=data, spec=spec)
    assert counts["read"] == 15
    words = {w for t in data.train.texts for w in t.split()} | {"[MASK]"}
    assert all(set(t.split()) <= words for t in split.texts)


def test_errors_name_the_source(data_dir, tmp_path):
    spec = DataSpec(path=str(data_dir))
    data = load_dataset(spec)
    with pytest.raises(DataError, match="transfer source not found"):
        resolve(spec, data, [str(tmp_path / "missing.txt")])
    write(tmp_path / "a" / "x.txt", "one\n")
    write(tmp_path / "b" / "x.txt", "two\n")
    with pytest.raises(DataError, match="share the cache name 'x'"):
        resolve(spec, data, [str(tmp_path / "a" / "x.txt"), str(tmp_path / "b" / "x.txt")])
    only_dev = write(tmp_path / "dev_only.txt", "a dev sentence\n")
    with pytest.raises(DataError, match="no transfer rows left"):
        read_transfer(resolve(spec, data, [str(only_dev)])[0]["dev_only"], dataset=data, spec=spec)
    assert source_name(Path("x/y/more.tsv.gz")) == "more" and source_name(Path("x/folder")) == "folder"
