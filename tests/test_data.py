"""distill.data: dataset directories in every layout, and a named DataError for every bad input."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
from data_errors import raises_data_error

from distill.data import (
    DataError,
    DataSpec,
    LabelMap,
    Split,
    file_digest,
    find_split,
    load_dataset,
    read_texts,
    text_hashes,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def tsv(path: Path, rows: list[tuple], header: tuple = ("text", "label")) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    return write(path, "\n".join(lines) + "\n")


def jsonl(path: Path, records: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def dataset_dir(tmp_path: Path, train: list[tuple], dev: list[tuple], **kw) -> Path:
    tsv(tmp_path / "train.tsv", train, **kw)
    tsv(tmp_path / "dev.tsv", dev, **kw)
    return tmp_path


def load(path: Path, **kw):
    return load_dataset(DataSpec(path=str(path), **kw))


TRAIN3 = [("good film", "pos"), ("bad film", "neg"), ("so-so film", "neutral"), ("great", "pos")]
DEV3 = [("fine", "neutral"), ("awful", "neg"), ("lovely", "pos")]


# --------------------------------------------------------------------------------------- formats


def test_tsv_three_string_classes(tmp_path):
    ds = load(dataset_dir(tmp_path, TRAIN3, DEV3))
    assert ds.train.texts == ["good film", "bad film", "so-so film", "great"]
    assert ds.train.labels == ["pos", "neg", "neutral", "pos"]
    assert ds.train.line_numbers == [2, 3, 4, 5]
    assert ds.train.text_pairs is None
    assert ds.dev.texts == ["fine", "awful", "lovely"]
    assert ds.label_map.names == ["neg", "neutral", "pos"]
    assert ds.label_map.id2label == {0: "neg", 1: "neutral", 2: "pos"}
    assert ds.label_map.label2id == {"neg": 0, "neutral": 1, "pos": 2}
    np.testing.assert_array_equal(ds.label_map.encode(ds.dev), [1, 0, 2])
    assert ds.label_map.encode(ds.train).dtype == np.int64
    assert ds.files == [str(tmp_path / "train.tsv"), str(tmp_path / "dev.tsv")]
    assert ds.train.source == str(tmp_path / "train.tsv")


def test_tsv_keeps_bare_quotes_as_glue_writes_them(tmp_path):
    train = [('he said " no', 0), ("it 's \"fine\"", 1)]
    ds = load(dataset_dir(tmp_path, train, [("x", 0), ("y", 1)]))
    assert ds.train.texts == ['he said " no', 'it \'s "fine"']


def test_csv_quoted_fields_with_commas_and_quotes(tmp_path):
    write(tmp_path / "train.csv", 'text,label\n"good, really good",pos\n"bad, ""very"" bad",neg\nplain,pos\n')
    write(tmp_path / "dev.csv", 'text,label\n"meh, fine",neg\n')
    ds = load(tmp_path)
    assert ds.train.texts == ["good, really good", 'bad, "very" bad', "plain"]
    assert ds.train.labels == ["pos", "neg", "pos"]
    assert ds.train.line_numbers == [2, 3, 4]
    assert ds.dev.texts == ["meh, fine"]


def test_csv_quoted_field_spanning_lines_keeps_newline_and_line_numbers(tmp_path):
    path = write(tmp_path / "train.csv", 'text,label\n"line one\nline two",1\nsecond,0\nthird,1,extra\n')
    write(tmp_path / "dev.csv", "text,label\nx,0\n")
    with raises_data_error(path, "expected 2 fields", "found 3", line=5):
        load(tmp_path)
    write(path, 'text,label\n"line one\nline two",1\nsecond,0\n')
    ds = load(tmp_path)
    assert ds.train.texts == ["line one\nline two", "second"]
    assert ds.train.line_numbers == [2, 4]


def test_crlf_line_endings_and_utf8_bom(tmp_path):
    (tmp_path / "train.tsv").write_bytes(b"\xef\xbb\xbftext\tlabel\r\ncaf\xc3\xa9\t1\r\nb\t0\r\n")
    (tmp_path / "dev.tsv").write_bytes(b"text\tlabel\r\nc\t0\r\n")
    ds = load(tmp_path)
    assert ds.train.texts == ["café", "b"]  # header found despite the BOM, no stray "\r"
    assert ds.train.labels == ["1", "0"]


def test_blank_lines_are_skipped_but_counted(tmp_path):
    write(tmp_path / "train.tsv", "text\tlabel\na\t0\n\nb\t1\n   \n")
    write(tmp_path / "dev.tsv", "text\tlabel\nc\t0\n")
    ds = load(tmp_path)
    assert ds.train.texts == ["a", "b"]
    assert ds.train.line_numbers == [2, 4]


def test_unicode_line_separators_inside_text_are_not_row_breaks(tmp_path):
    # U+2028 / U+0085 / form feed are line breaks for str.splitlines but not for TSV or JSONL
    write(tmp_path / "train.tsv", "text\tlabel\nfoo\x85bar\t1\nup\u2028down\t0\npage\x0cbreak\t1\n")
    jsonl(tmp_path / "dev.jsonl", [{"text": "a\u2028b", "label": 1}, {"text": "c\x85d", "label": 0}])
    ds = load(tmp_path)
    assert ds.train.texts == ["foo\x85bar", "up\u2028down", "page\x0cbreak"]
    assert ds.dev.texts == ["a\u2028b", "c\x85d"]
    assert ds.dev.line_numbers == [1, 2]


def test_jsonl_int_labels_and_extra_keys(tmp_path):
    jsonl(tmp_path / "train.jsonl", [
        {"text": "a", "label": 0, "extra": [1]},
        {"text": "b", "label": 1},
        {"text": "c", "label": 2.0},
        {"text": "d", "label": "1"},
    ])
    jsonl(tmp_path / "dev.jsonl", [{"text": "e", "label": 2}])
    ds = load(tmp_path)
    assert ds.train.texts == ["a", "b", "c", "d"]
    assert ds.train.labels == ["0", "1", "2", "1"]  # 2.0 and "1" normalise like 2 and 1
    assert ds.label_map.names == ["0", "1", "2"]
    np.testing.assert_array_equal(ds.label_map.encode(ds.dev), [2])


def test_jsonl_bool_labels(tmp_path):
    jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": True}, {"text": "b", "label": False}])
    jsonl(tmp_path / "dev.jsonl", [{"text": "c", "label": 1}])
    ds = load(tmp_path)
    assert ds.train.labels == ["1", "0"]
    assert ds.label_map.names == ["0", "1"]


def test_validation_is_accepted_as_the_dev_split(tmp_path):
    tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    tsv(tmp_path / "validation.tsv", [("c", 1), ("d", 0), ("e", 1)])
    ds = load(tmp_path)
    assert ds.dev.texts == ["c", "d", "e"]
    assert ds.dev.source == str(tmp_path / "validation.tsv")
    assert find_split(tmp_path, "dev") == tmp_path / "validation.tsv"


def test_formats_can_differ_between_splits(tmp_path):
    write(tmp_path / "train.csv", "text,label\na,x\nb,y\n")
    jsonl(tmp_path / "validation.jsonl", [{"text": "c", "label": "y"}])
    ds = load(tmp_path)
    assert ds.train.labels == ["x", "y"] and ds.dev.labels == ["y"]


def test_custom_columns_and_text_pairs(tmp_path):
    header = ("idx", "premise", "hypothesis", "gold")
    tsv(tmp_path / "train.tsv", [(0, "a cat sat", "a cat", "entail"), (1, "dogs", "cats", "contra")],
        header=header)
    tsv(tmp_path / "dev.tsv", [(0, "p", "h", "contra")], header=header)
    ds = load(tmp_path, text_column="premise", text_pair_column="hypothesis", label_column="gold")
    assert ds.train.texts == ["a cat sat", "dogs"]
    assert ds.train.text_pairs == ["a cat", "cats"]
    assert ds.dev.text_pairs == ["h"]
    assert ds.label_map.names == ["contra", "entail"]
    sub = ds.train.subset(np.array([1]))
    assert sub.texts == ["dogs"] and sub.text_pairs == ["cats"] and sub.labels == ["contra"]
    assert sub.line_numbers == [3]


def test_jsonl_text_pairs(tmp_path):
    jsonl(tmp_path / "train.jsonl", [{"s1": "a", "s2": "b", "y": 0}, {"s1": "c", "s2": "d", "y": 1}])
    jsonl(tmp_path / "dev.jsonl", [{"s1": "e", "s2": "f", "y": 1}])
    ds = load(tmp_path, text_column="s1", text_pair_column="s2", label_column="y")
    assert ds.train.text_pairs == ["b", "d"]
    assert ds.dev.texts == ["e"] and ds.dev.text_pairs == ["f"]


def test_missing_text_pair_column_is_named(tmp_path):
    path = tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    tsv(tmp_path / "dev.tsv", [("c", 0)])
    with raises_data_error(path, "missing column 'hypothesis'", "found: text, label", line=2):
        load(tmp_path, text_pair_column="hypothesis")


# ---------------------------------------------------------------------------------- class folders


def make_class_folders(root: Path, split: str, examples: dict[str, list[str]]) -> None:
    for label, texts in examples.items():
        for i, text in enumerate(texts):
            write(root / split / label / f"{i:03d}.txt", text + "\n")


def test_class_folder_layout(tmp_path):
    make_class_folders(tmp_path, "train", {"pos": ["great", "fine"], "neg": ["awful"], "mixed": ["ok"]})
    make_class_folders(tmp_path, "dev", {"pos": ["lovely"], "neg": ["bad"]})
    (tmp_path / "train" / "pos" / "notes.md").write_text("ignored")
    ds = load(tmp_path)
    assert ds.train.texts == ["ok", "awful", "great", "fine"]  # folders sorted, files sorted
    assert ds.train.labels == ["mixed", "neg", "pos", "pos"]
    assert ds.dev.labels == ["neg", "pos"]
    assert ds.label_map.names == ["mixed", "neg", "pos"]
    assert ds.train.source == str(tmp_path / "train")
    assert len(ds.files) == 6 and all(f.endswith(".txt") for f in ds.files)
    assert str(tmp_path / "train" / "pos" / "001.txt") in ds.files


def test_class_folder_validation_name_and_int_labels(tmp_path):
    make_class_folders(tmp_path, "train", {"10": ["a"], "2": ["b"], "1": ["c"]})
    make_class_folders(tmp_path, "validation", {"2": ["d"]})
    ds = load(tmp_path)
    assert ds.label_map.names == ["1", "2", "10"]
    np.testing.assert_array_equal(ds.label_map.encode(ds.dev), [1])


def test_class_folder_unseen_dev_label(tmp_path):
    make_class_folders(tmp_path, "train", {"pos": ["a"], "neg": ["b"]})
    make_class_folders(tmp_path, "dev", {"neutral": ["c"]})
    with raises_data_error(tmp_path / "dev", "'neutral' never appears in the training split", "neg, pos"):
        load(tmp_path)


def test_class_folder_errors(tmp_path):
    (tmp_path / "train").mkdir()
    make_class_folders(tmp_path, "dev", {"a": ["x"]})
    with raises_data_error(tmp_path / "train", "no class sub-folders"):
        load(tmp_path)
    (tmp_path / "train" / "pos").mkdir()
    (tmp_path / "train" / "pos" / "a.md").write_text("not a txt")
    with raises_data_error(tmp_path / "train", "no .txt files"):
        load(tmp_path)
    empty = tmp_path / "train" / "pos" / "empty.txt"
    empty.write_text("  \n")
    with raises_data_error(empty, "file is empty"):
        load(tmp_path)
    bad = tmp_path / "train" / "pos" / "empty.txt"
    bad.write_bytes(b"ok\nbroken \xff\n")
    with raises_data_error(bad, "not UTF-8", line=2):
        load(tmp_path)


# ------------------------------------------------------------------------------------ label map


def test_int_labels_sort_numerically(tmp_path):
    train = [(f"t{i}", lab) for i, lab in enumerate([10, 2, 1, 2, 10, 0])]
    ds = load(dataset_dir(tmp_path, train, [("x", 10), ("y", 0)]))
    assert ds.label_map.names == ["0", "1", "2", "10"]  # not ["0", "1", "10", "2"]
    assert ds.label_map.label2id["10"] == 3
    np.testing.assert_array_equal(ds.label_map.encode(ds.dev), [3, 0])


def test_label_sort_ints_before_strings_and_deterministic():
    names = LabelMap.from_labels(["b", "10", "a", "-1", "2", "01", "1"], "src").names
    assert names == ["-1", "01", "1", "2", "10", "a", "b"]
    # the same set in any order gives the same map ("01" and "1" tie numerically)
    assert LabelMap.from_labels(["1", "01", "1"], "src").names == ["01", "1"]
    assert LabelMap.from_labels(["01", "1"], "src").names == ["01", "1"]


def test_label_map_round_trip():
    lm = LabelMap.from_labels(["c", "a", "b", "a"], "src")
    assert lm.names == ["a", "b", "c"]
    assert {lm.label2id[name]: name for name in lm.names} == lm.id2label


def test_labels_are_stripped(tmp_path):
    write(tmp_path / "train.csv", "text,label\na, pos\nb,neg \n")
    write(tmp_path / "dev.csv", "text,label\nc,pos\n")
    ds = load(tmp_path)
    assert ds.train.labels == ["pos", "neg"]
    assert ds.label_map.names == ["neg", "pos"]


# ------------------------------------------------------------------------------- max_train_rows


def subset_dir(tmp_path: Path) -> Path:
    train = [(f"text {i}", i % 3) for i in range(200)]
    return dataset_dir(tmp_path, train, [("d", 0), ("e", 1)])


def test_max_train_rows_deterministic_per_seed(tmp_path):
    path = subset_dir(tmp_path)
    a = load(path, max_train_rows=50, seed=1).train
    b = load(path, max_train_rows=50, seed=1).train
    c = load(path, max_train_rows=50, seed=2).train
    assert len(a) == 50 and len(a.labels) == 50 and len(a.line_numbers) == 50
    assert a.texts == b.texts and a.labels == b.labels
    assert a.texts != c.texts
    # rows keep file order and stay aligned with their labels and lines
    assert a.line_numbers == sorted(a.line_numbers)
    for text, label, line in zip(a.texts, a.labels, a.line_numbers, strict=True):
        i = int(text.split()[1])
        assert label == str(i % 3) and line == i + 2


def test_max_train_rows_keeps_full_label_map_and_dev(tmp_path):
    path = subset_dir(tmp_path)
    ds = load(path, max_train_rows=10, seed=0)
    full = load(path)
    assert ds.label_map.names == full.label_map.names == ["0", "1", "2"]
    assert ds.dev.texts == full.dev.texts
    assert len(full.train) == 200


def test_max_train_rows_at_or_above_size_keeps_everything(tmp_path):
    path = subset_dir(tmp_path)
    assert len(load(path, max_train_rows=200).train) == 200
    assert load(path, max_train_rows=10_000).train.texts == load(path).train.texts


@pytest.mark.parametrize("rows", [0, 1, -5])
def test_max_train_rows_too_small(tmp_path, rows):
    path = subset_dir(tmp_path)
    with raises_data_error(path / "train.tsv", f"max_train_rows={rows}"):
        load(path, max_train_rows=rows)


def _two_classes(path: Path, seed: int) -> bool:
    try:
        load(path, max_train_rows=2, seed=seed)
    except DataError:
        return False
    return True


def test_subset_with_single_class_is_an_error(tmp_path):
    train = [(f"t{i}", 0) for i in range(50)] + [("odd one", 1)]
    path = dataset_dir(tmp_path, train, [("x", 0)])
    with raises_data_error(path / "train.tsv", "2-row subset has a single class"):
        load(path, max_train_rows=2, seed=0)  # seed 0 picks two class-0 rows
    assert any(_two_classes(path, seed) for seed in range(1, 200))  # only single-class subsets fail


def test_cap_train_draws_the_same_rows_for_classification_and_ner():
    """distill.data.cap_train: one draw for both tasks (a Split and an NER TokenSplit of the same
    size keep the same row indices), no cap or a cap at or above the size keeps everything, a
    cap under the least is a DataError naming the split's file."""
    from distill.data import cap_train
    from distill.ner_data import TokenSplit

    texts = [f"row {i}" for i in range(30)]
    split = Split(texts=texts, labels=[i % 3 for i in range(30)], source="train.tsv", line_numbers=list(range(2, 32)))
    tokens = TokenSplit(sentences=[[t] for t in texts], tags=[["O"]] * 30, source="train.conll")
    kept, rest = cap_train(split, 7, seed=3, least=2, unit="rows")
    assert len(kept) == 7 and len(rest) == 23 and sorted(kept.texts + rest.texts) == sorted(texts)
    assert kept.texts == [t for t in texts if t in set(kept.texts)]  # file order
    assert [s[0] for s in cap_train(tokens, 7, seed=3, least=1, unit="sentence")[0].sentences] == kept.texts
    assert cap_train(split, None, seed=3, least=2, unit="rows") == (split, None)
    assert cap_train(split, 30, seed=3, least=2, unit="rows") == (split, None)
    with raises_data_error("train.conll", "max_train_rows=0: need at least 1 sentence"):
        cap_train(tokens, 0, seed=3, least=1, unit="sentence")


def test_jsonl_lines_numbers_every_line_and_splits_on_newlines_only():
    """distill.data.jsonl_lines, the one JSONL reader: blank lines skipped but counted, a raw
    U+2028 inside a string is not a line break, a bad line carries its problem."""
    from distill.data import jsonl_lines

    text = '{"text": "a\u2028b"}\n\n  \n{bad\n[1]\n'  # U+2028 raw in the string, as ensure_ascii=False writes it
    rows = list(jsonl_lines(text))
    assert [r.line for r in rows] == [1, 4, 5]
    assert rows[0].record == {"text": "a\u2028b"} and rows[0].problem is None
    assert rows[1].record is None and rows[1].problem.startswith("not valid JSON (")
    assert rows[2].record == [1] and rows[2].problem is None


# ------------------------------------------------------------------------------------- real SST-2


def test_real_sst2(sst2_dir):
    ds = load(sst2_dir)
    assert len(ds.train) == 67_349
    assert len(ds.dev) == 872
    assert ds.label_map.names == ["0", "1"]
    assert ds.label_map.id2label == {0: "0", 1: "1"}
    assert ds.train.texts[0].startswith("hide new secretions from the parental units")
    assert ds.train.line_numbers[0] == 2 and ds.train.line_numbers[-1] == 67_350
    assert ds.dev.texts[0].startswith("it 's a charming and often affecting journey")
    ids = ds.label_map.encode(ds.train)
    assert set(np.unique(ids)) == {0, 1}
    assert 0.5 < ids.mean() < 0.6  # SST-2 train is about 56% positive
    assert ds.files == [str(sst2_dir / "train.tsv.gz"), str(sst2_dir / "dev.tsv.gz")]


def test_real_sst2_unlabeled(sst2_dir):
    split, counts = read_texts(sst2_dir / "test_unlabeled.tsv.gz", default_columns=("text", "sentence"))
    assert len(split) == 1_821 and counts == {"empty": 0}
    assert split.labels is None
    assert split.texts[0] == "uneasy mishmash of styles and genres ."
    assert split.line_numbers[0] == 2
    with raises_data_error(sst2_dir / "test_unlabeled.tsv.gz", "no text column", "'text'", "index, sentence"):
        read_texts(sst2_dir / "test_unlabeled.tsv.gz", text_column="text")


def test_sst2_small_fixture(sst2_small):
    ds = load(sst2_small)
    assert len(ds.train) == 256 and len(ds.dev) == 64
    assert len(read_texts(sst2_small / "test_unlabeled.tsv", text_column="sentence")[0]) == 32


# ------------------------------------------------------------------------------------ unlabeled


def test_read_texts_jsonl_and_csv(tmp_path):
    path = jsonl(tmp_path / "u.jsonl", [{"body": "one"}, {"body": "two", "label": 1}])
    split, counts = read_texts(path, text_column="body")
    assert split.texts == ["one", "two"] and split.labels is None and counts == {"empty": 0}
    csv_path = write(tmp_path / "u.csv", 'id,body\n1,"a, b"\n')
    assert read_texts(str(csv_path), text_column="body")[0].texts == ["a, b"]
    # no column named: the first of the defaults the table has
    assert read_texts(csv_path, default_columns=("text", "body"))[0].texts == ["a, b"]


def test_read_texts_plain_lines_gzip_and_folders(tmp_path):
    path = write(tmp_path / "u.txt", "first line\n\n  \nsecond, with\ttab\nthird\n")
    split, counts = read_texts(path)
    assert split.texts == ["first line", "second, with\ttab", "third"] and counts == {"empty": 2}
    assert split.line_numbers == [1, 4, 5]
    gz = tmp_path / "u.txt.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_texts(gz)[0].texts == split.texts
    folder = tmp_path / "docs"
    write(folder / "a.txt", "doc a\n")
    write(folder / "sub" / "b.txt", "doc b\nsecond line\n")
    write(folder / "empty.txt", "  \n")
    write(folder / "notes.md", "ignored")
    split, counts = read_texts(folder)
    assert split.texts == ["doc a", "doc b\nsecond line"] and counts == {"empty": 1}


def test_read_texts_errors(tmp_path):
    md = write(tmp_path / "u.md", "plain text\n")
    with raises_data_error(md, "must be a folder or one of .txt, .tsv, .csv, .jsonl"):
        read_texts(md)
    missing = tmp_path / "nope.tsv"
    with raises_data_error(missing, "file not found"):
        read_texts(missing, text_column="text")
    blank = write(tmp_path / "e.tsv", "text\nfine\n  \nok\n")  # a whitespace-only line is skipped
    assert read_texts(blank, text_column="text")[0].texts == ["fine", "ok"]
    two_fields = write(tmp_path / "t.tsv", "text\nfine\n\t\n")
    with raises_data_error(two_fields, "expected 1 fields (text), found 2", line=3):
        read_texts(two_fields, text_column="text")
    empty_text = jsonl(tmp_path / "e.jsonl", [{"text": "a"}, {"text": ""}])
    split, counts = read_texts(empty_text, text_column="text")  # an empty row is skipped and counted
    assert split.texts == ["a"] and counts == {"empty": 1}
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbad \xff byte\nok\n")
    with raises_data_error(bad, "not UTF-8 at byte 9", line=2):
        read_texts(bad)
    nothing = jsonl(tmp_path / "n.jsonl", [{"other": "a"}])
    with raises_data_error(nothing, "no text column", "'text', 'sentence'", "found: other", line=1):
        read_texts(nothing, default_columns=("text", "sentence"))


# ----------------------------------------------------------------------------------- text_hashes


def test_text_hashes_stable_and_distinct():
    split = Split(texts=["a", "b", "a", "a b"], labels=None, source="mem")
    h = text_hashes(split)
    assert h.shape == (4, 8) and h.dtype == np.uint8
    np.testing.assert_array_equal(h, text_hashes(split))
    np.testing.assert_array_equal(h[0], h[2])
    assert len({bytes(row) for row in h}) == 3
    # a fixed value: sha256("a")[:8], so hashes survive across processes and versions
    assert bytes(h[0]).hex() == "ca978112ca1bbdca"


def test_text_hashes_include_the_pair():
    plain = text_hashes(Split(texts=["a", "a"], labels=None, source="mem"))
    paired = text_hashes(Split(texts=["a", "a"], labels=None, source="mem", text_pairs=["x", "y"]))
    assert not np.array_equal(paired[0], paired[1])
    assert not np.array_equal(paired[0], plain[0])
    # ("ab", "c") and ("a", "bc") do not collide
    split = Split(texts=["ab", "a"], labels=None, source="mem", text_pairs=["c", "bc"])
    h = text_hashes(split)
    assert not np.array_equal(h[0], h[1])


def test_text_hashes_on_sst2(sst2_small):
    ds = load(sst2_small)
    h = text_hashes(ds.train)
    assert len({bytes(row) for row in h}) == len(set(ds.train.texts))
    np.testing.assert_array_equal(h[:5], text_hashes(ds.train.subset(np.arange(5))))


def test_file_digest(tmp_path):
    path = write(tmp_path / "f.txt", "abc")
    assert file_digest(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ------------------------------------------------------------------------------------ bad inputs


def test_missing_directory_relative_and_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="no such dataset directory") as info:
        load_dataset(DataSpec(path="./no_such_data"))
    assert "no_such_data" in str(info.value)
    absent = tmp_path / "absent" / "data"
    with raises_data_error(absent, "no such dataset directory"):
        load_dataset(DataSpec(path=str(absent)))


def test_file_given_instead_of_directory(tmp_path):
    path = tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    with raises_data_error(path, "expected a dataset directory"):
        load(path)


def test_no_train_split(tmp_path):
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    tsv(tmp_path / "training.tsv", [("a", 0)])  # a near miss is not a train split
    with raises_data_error(tmp_path, "no train split", "train{.tsv,.csv,.jsonl}"):
        load(tmp_path)


def test_no_dev_split(tmp_path):
    tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    tsv(tmp_path / "test.tsv", [("a", 0)])
    with raises_data_error(tmp_path, "no dev split", "dev{.tsv,.csv,.jsonl}[.gz] or validation{"):
        load(tmp_path)


def test_several_files_for_one_split(tmp_path):
    tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    write(tmp_path / "train.csv", "text,label\na,0\nb,1\n")
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with raises_data_error(tmp_path, "several files for the train split", "train.tsv", "train.csv"):
        load(tmp_path)


def test_dev_and_validation_both_present(tmp_path):
    tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    jsonl(tmp_path / "validation.jsonl", [{"text": "a", "label": 0}])
    with raises_data_error(tmp_path, "several files for the dev split", "dev.tsv", "validation.jsonl"):
        load(tmp_path)


def test_table_file_and_class_folder_for_one_split(tmp_path):
    tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    make_class_folders(tmp_path, "train", {"0": ["a"], "1": ["b"]})
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with raises_data_error(tmp_path, "several files for the train split", "train.tsv, train"):
        load(tmp_path)


@pytest.mark.parametrize("name", ["train.tsv", "train.csv", "train.jsonl"])
@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, name, content):
    path = write(tmp_path / name, content)
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with raises_data_error(path, "file is empty"):
        load(tmp_path)


@pytest.mark.parametrize("name,header", [("dev.tsv", "text\tlabel\n"), ("dev.csv", "text,label\n\n")])
def test_header_only(tmp_path, name, header):
    tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    path = write(tmp_path / name, header)
    with raises_data_error(path, "no rows after the header"):
        load(tmp_path)


def test_blank_header(tmp_path):
    path = write(tmp_path / "train.tsv", "\t\na\t0\n")
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with raises_data_error(path, "missing header row", line=1):
        load(tmp_path)


def test_jsonl_blank_lines_then_garbage(tmp_path):
    path = write(tmp_path / "train.jsonl", "\n \n\t\nx")
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with raises_data_error(path, "not valid JSON", line=4):
        load(tmp_path)


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_missing_label_column_lists_found_columns(tmp_path, fmt):
    if fmt == "jsonl":
        path = jsonl(tmp_path / "train.jsonl", [{"sentence": "a", "y": 0}, {"sentence": "b", "y": 1}])
    else:
        sep = "\t" if fmt == "tsv" else ","
        path = write(tmp_path / f"train.{fmt}", f"sentence{sep}y\na{sep}0\nb{sep}1\n")
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    line = 1 if fmt == "jsonl" else 2
    with raises_data_error(path, "missing column 'text'", "found: sentence, y", line=line):
        load(tmp_path)
    with raises_data_error(path, "missing column 'label'", "found: sentence, y", line=line):
        load(tmp_path, text_column="sentence")


def test_missing_column_in_dev_only(tmp_path):
    tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    path = tsv(tmp_path / "dev.tsv", [("a", 0)], header=("text", "gold"))
    with raises_data_error(path, "missing column 'label'", "found: text, gold"):
        load(tmp_path)


def test_jsonl_key_missing_on_a_later_line(tmp_path):
    path = jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1}, {"label": 1}])
    jsonl(tmp_path / "dev.jsonl", [{"text": "c", "label": 0}])
    with raises_data_error(path, "column 'text' is missing or not text", line=3):
        load(tmp_path)
    jsonl(path, [{"text": "a", "label": 0}, {"text": "b"}])
    with raises_data_error(path, "empty label", line=2):
        load(tmp_path)
    jsonl(path, [{"text": "a", "label": 0}, {"text": ["a", "list"], "label": 1}])
    with raises_data_error(path, "column 'text' is missing or not text", line=2):
        load(tmp_path)


def test_empty_text(tmp_path):
    path = write(tmp_path / "train.tsv", "text\tlabel\nfine\t0\n   \t1\n")
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with raises_data_error(path, "empty text in column 'text'", line=3):
        load(tmp_path)


def test_empty_text_in_csv_and_jsonl(tmp_path):
    write(tmp_path / "train.csv", 'text,label\na,0\n"",1\n')
    jsonl(tmp_path / "dev.jsonl", [{"text": "a", "label": 0}])
    with raises_data_error(tmp_path / "train.csv", "empty text", line=3):
        load(tmp_path)
    write(tmp_path / "train.csv", "text,label\na,0\nb,1\n")
    jsonl(tmp_path / "dev.jsonl", [{"text": "a", "label": 0}, {"text": " ", "label": 1}])
    with raises_data_error(tmp_path / "dev.jsonl", "empty text", line=2):
        load(tmp_path)


def test_empty_text_pair(tmp_path):
    header = ("a", "b", "label")
    tsv(tmp_path / "train.tsv", [("x", "y", 0), ("x", " ", 1)], header=header)
    tsv(tmp_path / "dev.tsv", [("x", "y", 0)], header=header)
    with raises_data_error(tmp_path / "train.tsv", "empty text in column 'b'", line=3):
        load(tmp_path, text_column="a", text_pair_column="b")


def test_empty_label(tmp_path):
    path = write(tmp_path / "train.tsv", "text\tlabel\na\t0\nb\t \n")
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with raises_data_error(path, "empty label", line=3):
        load(tmp_path)


@pytest.mark.parametrize("row,found", [("too\tmany\tfields", 3), ("lonely", 1), ("a\t1\t", 3)])
def test_wrong_number_of_fields_in_tsv(tmp_path, row, found):
    path = write(tmp_path / "train.tsv", f"text\tlabel\na\t0\nb\t1\n\nc\t0\n{row}\nd\t1\n")
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with raises_data_error(path, "expected 2 fields (text, label)", f"found {found}", line=6):
        load(tmp_path)


def test_wrong_number_of_fields_in_csv(tmp_path):
    path = write(tmp_path / "dev.csv", 'text,label\n"a, b",0\nunquoted, comma,1\n')
    tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    with raises_data_error(path, "expected 2 fields", "found 3", line=3):
        load(tmp_path)


def test_dev_label_unseen_in_training(tmp_path):
    path = dataset_dir(tmp_path, TRAIN3, [("x", "pos"), ("y", "neg"), ("z", "mixed")])
    with raises_data_error(path / "dev.tsv", "label 'mixed' never appears in the training split",
                           "known labels: neg, neutral, pos", line=4):
        load(path)


def test_dev_label_unseen_in_training_jsonl_line(tmp_path):
    jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    write(tmp_path / "dev.jsonl", '{"text": "c", "label": 1}\n\n{"text": "d", "label": 2}\n')
    with raises_data_error(tmp_path / "dev.jsonl", "label '2' never appears", line=3):
        load(tmp_path)


def test_single_class_in_training(tmp_path):
    path = dataset_dir(tmp_path, [("a", "pos"), ("b", "pos"), ("c", "pos")], [("d", "pos")])
    with raises_data_error(path / "train.tsv", "only one class", "'pos'", "need at least 2"):
        load(path)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_undecodable_bytes_name_the_line(tmp_path, bom):
    path = tmp_path / "train.tsv"
    path.write_bytes(bom + b"text\tlabel\nok\t0\nfine\t1\nbad \xe9t\xe9\t0\n")
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    offset = len(bom) + len(b"text\tlabel\nok\t0\nfine\t1\nbad ")
    with raises_data_error(path, "not UTF-8", f"at byte {offset}", line=4):
        load(tmp_path)


def test_undecodable_bytes_on_first_line(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_bytes(b'{"text": "\xff", "label": 0}\n')
    tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    with raises_data_error(path, "not UTF-8", line=1):
        load(tmp_path)


def test_invalid_json_line(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": 1\n')
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with raises_data_error(path, "not valid JSON", line=2):
        load(tmp_path)


@pytest.mark.parametrize("line", ['["a", 0]', '"just a string"', "42", "null"])
def test_jsonl_line_not_an_object(tmp_path, line):
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": 0}\n' + line + "\n")
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with raises_data_error(path, "must be a JSON object", line=2):
        load(tmp_path)


def test_csv_field_over_the_csv_module_limit_is_a_data_error(tmp_path):
    path = write(tmp_path / "train.tsv", "text\tlabel\na\t0\n" + "x" * 200_000 + "\t1\n")
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with raises_data_error(path, "unreadable TSV row", "field limit", line=3):
        load(tmp_path)


def test_data_error_attributes_and_is_value_error(tmp_path):
    err = DataError(tmp_path / "f.tsv", "boom", 7)
    assert isinstance(err, ValueError)
    assert str(err) == f"{tmp_path / 'f.tsv'}, line 7: boom"
    assert (err.path, err.line, err.problem) == (str(tmp_path / "f.tsv"), 7, "boom")
    assert str(DataError("f.tsv", "boom")) == "f.tsv: boom"


def test_unreadable_directory_entries_do_not_count_as_splits(tmp_path):
    tsv(tmp_path / "train.tsv", [("a", 0), ("b", 1)])
    os.symlink(tmp_path / "missing.tsv", tmp_path / "dev.tsv")  # dangling link: not a file
    with raises_data_error(tmp_path, "no dev split"):
        load(tmp_path)


# ------------------------------------------------------------------- many bad rows, skip, encodings


def test_every_bad_row_of_a_file_is_listed_first_20_and_the_count(tmp_path):
    good = [f"row {i}\t{i % 2}" for i in range(5)]
    bad = [f"bad {i}" for i in range(23)] + ["\t1"]  # 23 with one field, then an empty text
    path = write(tmp_path / "train.tsv", "text\tlabel\n" + "\n".join(good + bad) + "\n")
    tsv(tmp_path / "dev.tsv", [("a", 0)])
    with pytest.raises(DataError) as info:
        load(tmp_path)
    err = info.value
    assert len(err.rows) == 24 and err.line == 7 and err.path == str(path)
    lines = str(err).splitlines()
    assert lines[0] == f"{path}: 24 bad rows (the first 20 below)" and len(lines) == 21
    assert lines[1] == "  line 7: expected 2 fields (text, label), found 1"


def test_skip_drops_bad_rows_and_records_each(tmp_path):
    path = write(tmp_path / "train.tsv", "text\tlabel\nfine\t0\nbad\nok\t1\n  \t0\nalso\t\nlast\t1\n")
    write(tmp_path / "dev.tsv", "text\tlabel\nd\t0\nunknown label\t7\n")
    ds = load(tmp_path, on_bad_rows="skip")
    assert ds.train.texts == ["fine", "ok", "last"] and ds.train.line_numbers == [2, 4, 7]
    assert len(ds.dev) == 1
    assert [(Path(r.path).name, r.line) for r in ds.skipped] == [("train.tsv", 3), ("train.tsv", 5), ("train.tsv", 6),
                                                                 ("dev.tsv", 3)]
    assert ds.skipped[0].reason.startswith("expected 2 fields") and "never appears" in ds.skipped[-1].reason
    assert str(path) == ds.skipped[0].path


def test_gzipped_splits_read_like_plain_ones(tmp_path):
    plain = dataset_dir(tmp_path / "plain", TRAIN3, DEV3)
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (zipped / f"{name}.gz").write_bytes(gzip.compress((plain / name).read_bytes()))
    a, b = load(plain), load(zipped)
    assert a.train.texts == b.train.texts and a.dev.labels == b.dev.labels
    assert b.files == [str(zipped / "train.tsv.gz"), str(zipped / "dev.tsv.gz")]
    (zipped / "dev.tsv.gz").write_bytes(b"not gzip at all")
    with raises_data_error(zipped / "dev.tsv.gz", "not a readable gzip file"):
        load(zipped)


def test_encoding_auto_reads_a_latin1_file_and_says_so(tmp_path):
    (tmp_path / "train.tsv").write_bytes("text\tlabel\ncafé crème\t0\nnaïve\t1\n".encode("latin-1"))
    tsv(tmp_path / "dev.tsv", [("ok", 0)])
    with raises_data_error(tmp_path / "train.tsv", "not UTF-8", line=2):
        load(tmp_path)
    ds = load(tmp_path, encoding="auto")
    assert ds.train.texts == ["café crème", "naïve"]
    assert ds.fallback_decoded == {str(tmp_path / "train.tsv"): "cp1252"}
    assert load(tmp_path, encoding="latin-1").train.texts == ["café crème", "naïve"]
    with raises_data_error(tmp_path / "train.tsv", "unknown encoding 'klingon'"):
        load(tmp_path, encoding="klingon")


def test_a_corpus_with_an_undecodable_and_an_empty_file_loads_with_skip(tmp_path):
    make_class_folders(tmp_path, "train", {"pos": ["good", "great", "fine"], "neg": ["bad", "awful"]})
    (tmp_path / "train" / "pos" / "latin.txt").write_bytes("d\xe9j\xe0 vu".encode("latin-1"))
    (tmp_path / "train" / "neg" / "empty.txt").write_bytes(b"")
    make_class_folders(tmp_path, "dev", {"pos": ["ok"], "neg": ["meh"]})
    with raises_data_error(tmp_path / "train", "2 bad rows"):
        load(tmp_path)
    ds = load(tmp_path, on_bad_rows="skip")
    assert len(ds.train) == 5
    assert sorted((Path(r.path).name, r.reason.split(" at ")[0]) for r in ds.skipped) == [
        ("empty.txt", "file is empty"), ("latin.txt", "bytes that are not UTF-8")]
    assert len(load(tmp_path, on_bad_rows="skip", encoding="auto").train) == 6  # the Latin-1 file reads
