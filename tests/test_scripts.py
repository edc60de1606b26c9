"""The data-preparation scripts (scripts/): the WNUT-16 split rule and the review sentences, on
small files made here (the real data stays out of the repository)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from distill.ner_data import NerSpec, load_ner_dataset

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wnut16_split_drops_repeats_and_writes_files_the_ner_reader_takes(tmp_path, capsys):
    split = load("wnut16_split")
    sentences = [[(f"w{i}", "O"), ("Paris", "B-geo-loc")] for i in range(9)]
    sentences += [[("w0", "O"), ("Paris", "O")], [("w1", "O"), ("Paris", "B-geo-loc")]]  # repeats: other tags, same
    source = tmp_path / "ner.txt"
    source.write_text("\t\n".join("".join(f"{t}\t{g}\n" for t, g in s) for s in sentences))
    split.main([str(source), str(tmp_path / "out")])
    assert "11 sentences, 2 repeats dropped (1 with other tags); train 7, dev 2 (4 words, 2 entities)" in \
        capsys.readouterr().out
    data = load_ner_dataset(NerSpec(path=str(tmp_path / "out")))
    train, dev = data.train.sentences, data.dev.sentences
    assert len(train) == 7 and len(dev) == 2
    assert sorted(s[0] for s in train + dev) == [f"w{i}" for i in range(9)]  # every first copy, once
    again = tmp_path / "again"
    split.main([str(source), str(again)])  # the same seed: the same split, byte for byte
    assert (again / "train.conll").read_bytes() == (tmp_path / "out" / "train.conll").read_bytes()


def test_wnut16_split_names_a_malformed_line(tmp_path):
    split = load("wnut16_split")
    source = tmp_path / "ner.txt"
    source.write_text("word\tO\nnotag\n")
    with pytest.raises(SystemExit, match=r"ner.txt, line 2: expected 'token<TAB>tag'"):
        split.main([str(source), str(tmp_path / "out")])


def test_review_sentences_split_punctuation_and_keep_6_to_30_tokens():
    texts = load("review_texts")
    review = ("A fine film, from Nolan's best years! Too short.<br /><br />I'd watch it again in IMAX, "
              "twice over. " + "word " * 31 + "end.")
    assert texts.sentences_of(review) == ["A fine film , from Nolan's best years !",
                                          "I'd watch it again in IMAX , twice over ."]


def test_review_corpus_and_sentences_files(tmp_path, monkeypatch, capsys):
    texts = load("review_texts")
    csv_path = tmp_path / "reviews.csv"
    rows = [f'"Review {i} is a long enough sentence here.<br />And a second line, {i} times over."' for i in range(6)]
    csv_path.write_text("text,label,source\n" + "".join(f"{r},0,imdb\n" for r in rows))
    monkeypatch.setattr(sys, "argv", ["review_texts.py", "corpus", str(csv_path), str(tmp_path / "c.jsonl")])
    texts.main()
    first = json.loads((tmp_path / "c.jsonl").read_text().splitlines()[0])["text"]
    assert first == "Review 0 is a long enough sentence here.\nAnd a second line, 0 times over."
    out = tmp_path / "s.txt"
    monkeypatch.setattr(sys, "argv", ["review_texts.py", "sentences", str(csv_path), str(out), "--count=5"])
    texts.main()
    assert "5 of 12 distinct sentences" in capsys.readouterr().out
    assert len(set(out.read_text().splitlines())) == 5
    monkeypatch.setattr(sys, "argv", ["review_texts.py", "sentences", str(csv_path), str(out), "--count=13"])
    with pytest.raises(SystemExit, match="--count=13: only 12 distinct sentences"):
        texts.main()
