"""distill.ner_data: CoNLL and JSONL token splits, tag schemes and their conversion, and a named
DataError for every bad line."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
from data_errors import raises_data_error
from needed import needed

from distill.data import DataError
from distill.ner_data import (
    NerSpec,
    TokenSplit,
    detect_scheme,
    find_ner_split,
    impossible_tags,
    iob1_to_iob2,
    iob2_to_iob1,
    iob2_to_iobes,
    iobes_to_iob2,
    load_ner_dataset,
    repair_iob2,
    to_iob2,
)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def conll(sentences: list[list[tuple[str, str]]], sep: str = "\t") -> str:
    return "\n\n".join("\n".join(f"{tok}{sep}{tag}" for tok, tag in s) for s in sentences) + "\n"


def jsonl(records: list[object]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def load(path: Path, **kw):
    return load_ner_dataset(NerSpec(path=str(path), **kw))


TRAIN = [[("EU", "B-ORG"), ("rejects", "O"), ("German", "B-MISC"), ("call", "O")],
         [("Peter", "B-PER"), ("Blackburn", "I-PER")]]
DEV = [[("Paris", "B-LOC"), ("is", "O"), ("in", "O"), ("France", "B-LOC")],
       [("Peter", "B-PER"), ("says", "O")]]
TRAIN_LOC = [*TRAIN, [("Rome", "B-LOC")]]  # so that dev's LOC is known


def dataset(tmp_path: Path, train=TRAIN_LOC, dev=DEV, suffix=".conll") -> Path:
    write(tmp_path / f"train{suffix}", conll(train))
    write(tmp_path / f"dev{suffix}", conll(dev))
    return tmp_path


# --------------------------------------------------------------------------------------- formats


def test_tab_separated_conll_exact_sentences_tags_and_lines(tmp_path):
    ds = load(dataset(tmp_path))
    assert ds.train.sentences == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["Rome"]]
    assert ds.train.tags == [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert ds.train.line_numbers == [1, 6, 9]
    assert ds.train.token_lines == [[1, 2, 3, 4], [6, 7], [9]]
    assert ds.dev.sentences == [["Paris", "is", "in", "France"], ["Peter", "says"]]
    assert ds.tag_scheme == "iob2"
    assert ds.files == [str(tmp_path / "train.conll"), str(tmp_path / "dev.conll")]
    assert ds.train.source == str(tmp_path / "train.conll")
    assert ds.skipped == [] and ds.repaired == {} and ds.unused_train is None
    assert len(ds.train) == 3 and ds.train.n_tokens == 7


def test_space_separated_columns_docstart_whitespace_blanks_crlf_gz(tmp_path):
    # CoNLL-2003 layout: four space-separated columns, the tag last; -DOCSTART- lines; "blank"
    # lines that hold spaces or a tab; CRLF line ends; gzipped
    text = ("-DOCSTART- -X- -X- O\r\n\r\n"
            "EU NNP B-NP B-ORG\r\nrejects VBZ B-VP O\r\n \t \r\n"
            "Peter NNP B-NP B-PER\r\nBlackburn NNP I-NP I-PER\r\n\t\r\n"
            "-DOCSTART- -X- -X- O\r\n"
            "BRUSSELS NNP B-NP B-LOC\r\n   \r\n")
    write(tmp_path / "train.txt.gz", text)
    write(tmp_path / "validation.tsv", "Peter\tNNP\tB-PER\n\nRome\tB-LOC\n")
    ds = load(tmp_path)
    assert ds.train.sentences == [["EU", "rejects"], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert ds.train.tags == [["B-ORG", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert ds.train.token_lines == [[3, 4], [6, 7], [10]]
    assert ds.dev.sentences == [["Peter"], ["Rome"]]
    assert ds.dev.tags == [["B-PER"], ["B-LOC"]]
    assert ds.files == [str(tmp_path / "train.txt.gz"), str(tmp_path / "validation.tsv")]


def test_tab_separated_token_may_hold_spaces_and_tag_is_the_last_column(tmp_path):
    write(tmp_path / "train.conll", "New York\tNNP\tB-LOC\nis\tVBZ\tO\n\nBig\tB-ORG\n")
    write(tmp_path / "dev.conll", "York\tB-LOC\n")
    ds = load(tmp_path)
    assert ds.train.sentences == [["New York", "is"], ["Big"]]
    assert ds.train.tags == [["B-LOC", "O"], ["B-ORG"]]


def test_jsonl_exact_sentences_and_empty_sentence_skipped(tmp_path):
    write(tmp_path / "train.jsonl", jsonl([
        {"tokens": ["EU", "rejects", "it"], "tags": ["B-ORG", "O", "O"]},
        {"tokens": [], "tags": []},
        "",
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"], "id": 7},
    ]))
    write(tmp_path / "dev.jsonl.gz", jsonl([{"tokens": ["Peter"], "tags": ["B-PER"]}]))
    ds = load(tmp_path)
    assert ds.train.sentences == [["EU", "rejects", "it"], ["Peter", "Blackburn"]]
    assert ds.train.tags == [["B-ORG", "O", "O"], ["B-PER", "I-PER"]]
    assert ds.train.line_numbers == [1, 4]
    assert ds.train.token_lines == [[1, 1, 1], [4, 4]]
    assert ds.dev.tags == [["B-PER"]]


def test_find_ner_split_suffixes_and_errors(tmp_path):
    for name in ("train.conll", "train.txt", "train.tsv", "train.jsonl", "train.conll.gz"):
        folder = tmp_path / name.replace(".", "_")
        write(folder / name, "a\tO\n")
        assert find_ner_split(folder, "train") == folder / name
    write(tmp_path / "v" / "validation.txt", "a\tO\n")
    assert find_ner_split(tmp_path / "v", "dev") == tmp_path / "v" / "validation.txt"
    with raises_data_error(tmp_path / "v", "no train split", "train{.conll,.txt,.tsv,.jsonl}[.gz]",
                    ".conll, .txt, .tsv are read as CoNLL"):
        find_ner_split(tmp_path / "v", "train")
    write(tmp_path / "two" / "dev.conll", "a\tO\n")
    write(tmp_path / "two" / "validation.jsonl", "{}\n")
    with raises_data_error(tmp_path / "two", "several files for the dev split", "dev.conll", "validation.jsonl"):
        find_ner_split(tmp_path / "two", "dev")


def test_subset_keeps_lines(tmp_path):
    ds = load(dataset(tmp_path))
    sub = ds.train.subset(np.array([2, 0]))
    assert isinstance(sub, TokenSplit)
    assert sub.sentences == [["Rome"], ["EU", "rejects", "German", "call"]]
    assert sub.tags == [["B-LOC"], ["B-ORG", "O", "B-MISC", "O"]]
    assert sub.line_numbers == [9, 1] and sub.token_lines == [[9], [1, 2, 3, 4]]


def test_max_train_rows_picks_sentences_reproducibly(tmp_path):
    train = [[(f"w{i}", "O"), ("X", "B-PER")] for i in range(10)]
    dataset(tmp_path, train=train, dev=[[("X", "B-PER")]])
    a, b = load(tmp_path, max_train_rows=4, seed=3), load(tmp_path, max_train_rows=4, seed=3)
    assert len(a.train) == 4 and len(a.unused_train) == 6
    assert a.train.sentences == b.train.sentences
    assert sorted(s[0] for s in a.train.sentences + a.unused_train.sentences) == sorted(f"w{i}" for i in range(10))
    with raises_data_error(tmp_path / "train.conll", "max_train_rows=0"):
        load(tmp_path, max_train_rows=0)


# ---------------------------------------------------------------------------------------- schemes


def test_detect_scheme_for_each_scheme():
    assert detect_scheme([["B-PER", "I-PER", "O", "B-LOC"], ["O"]]) == "iob2"
    assert detect_scheme([["O", "O"]]) == "iob2"
    assert detect_scheme([["B-PER", "E-PER", "O"]]) == "iobes"
    assert detect_scheme([["S-PER", "O"]]) == "iobes"
    # IOB1: entities start with I-; B- only between adjacent same-type entities
    assert detect_scheme([["I-PER", "I-PER", "O", "I-LOC"], ["I-LOC", "B-LOC", "O"]]) == "iob1"
    assert detect_scheme([["I-PER", "I-LOC"]]) == "iob1"  # IO: no B- at all
    # one B- that starts an entity means IOB2 (IOB1 would have written I-): the I- start is an error
    assert detect_scheme([["I-PER", "O"], ["O", "B-LOC"]]) == "iob2"
    assert detect_scheme([["I-PER", "O"], ["I-LOC", "B-PER"]]) == "iob2"  # B-PER after LOC starts one


def test_iobes_to_iob2_and_back():
    iobes = ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-ORG", "E-ORG", "S-ORG"]
    iob2 = ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-LOC", "B-ORG", "I-ORG", "B-ORG"]
    assert iobes_to_iob2(iobes) == iob2
    assert iob2_to_iobes(iob2) == iobes
    assert to_iob2(iobes, "iobes") == iob2


def test_iob1_to_iob2_adjacent_same_type_entities_and_back():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG", "O", "I-MISC"]
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "B-ORG", "I-ORG", "O", "B-MISC"]
    assert iob1_to_iob2(iob1) == iob2
    assert iob2_to_iob1(iob2) == iob1
    assert to_iob2(iob1, "iob1") == iob2
    assert to_iob2(iob2, "iob2") == iob2


def test_round_trips_over_random_valid_iob2():
    rng = random.Random(0)
    for _ in range(500):
        tags, previous = [], "O"
        for _ in range(rng.randrange(0, 9)):
            options = ["O", "B-A", "B-B"] + ([] if previous == "O" else ["I" + previous[1:]])
            previous = rng.choice(options)
            tags.append(previous)
        assert impossible_tags(tags, "iob2") == []
        assert iobes_to_iob2(iob2_to_iobes(tags)) == tags
        assert iob1_to_iob2(iob2_to_iob1(tags)) == tags
        assert iob2_to_iob1(iob1_to_iob2(iob2_to_iob1(tags))) == iob2_to_iob1(tags)
        assert iob2_to_iobes(iobes_to_iob2(iob2_to_iobes(tags))) == iob2_to_iobes(tags)


def test_iobes_and_iob1_files_are_converted_to_iob2(tmp_path):
    write(tmp_path / "a" / "train.conll", conll([[("Peter", "B-PER"), ("Smith", "E-PER"), ("in", "O"), ("Rome", "S-LOC")]]))
    write(tmp_path / "a" / "dev.conll", conll([[("Rome", "S-LOC"), ("and", "O"), ("Paris", "S-LOC")]]))
    ds = load(tmp_path / "a")
    assert ds.tag_scheme == "iobes"
    assert ds.train.tags == [["B-PER", "I-PER", "O", "B-LOC"]]
    assert ds.dev.tags == [["B-LOC", "O", "B-LOC"]]
    assert ds.tag_map.names == ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]

    write(tmp_path / "b" / "train.conll", conll([[("Peter", "I-PER"), ("Paul", "B-PER"), ("in", "O"), ("Rome", "I-LOC")]]))
    write(tmp_path / "b" / "dev.conll", conll([[("Rome", "I-LOC"), ("Paris", "B-LOC")]]))
    ds = load(tmp_path / "b")
    assert ds.tag_scheme == "iob1"
    assert ds.train.tags == [["B-PER", "B-PER", "O", "B-LOC"]]
    assert ds.dev.tags == [["B-LOC", "B-LOC"]]
    # the same files read as IOB2 by config: the I- starts are impossible
    with raises_data_error(tmp_path / "b" / "train.conll", "tag I-PER starts the sentence (IOB2 needs B-PER first)",
                    "tag I-LOC follows O (IOB2 needs B-LOC first)"):
        load(tmp_path / "b", tag_scheme="iob2")


def test_forced_scheme_rejects_tags_it_does_not_write(tmp_path):
    write(tmp_path / "train.conll", "Peter\tS-PER\nsays\tO\n")
    write(tmp_path / "dev.conll", "Peter\tS-PER\n")
    with raises_data_error(tmp_path / "train.conll", "tag 'S-PER' is not an IOB2 tag (O, B-TYPE, I-TYPE)", line=1):
        load(tmp_path, tag_scheme="iob2")
    with raises_data_error("tag_scheme", "'bio'", "auto, iob1, iob2, iobes"):
        load(tmp_path, tag_scheme="bio")


def test_tag_map_holds_o_and_both_prefixes_of_every_training_type(tmp_path):
    # train has only one-token PER entities and no O; dev's I-PER is still a known tag
    dataset(tmp_path, train=[[("Ann", "B-PER"), ("Bob", "B-PER")], [("Rome", "B-LOC"), ("City", "I-LOC")]],
            dev=[[("Ann", "B-PER"), ("Lee", "I-PER"), ("left", "O")]])
    ds = load(tmp_path)
    assert ds.tag_map.names == ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
    assert ds.tag_map.label2id["O"] == 4
    assert ds.dev.tags == [["B-PER", "I-PER", "O"]]


# ------------------------------------------------------------------------------ impossible sequences


def test_impossible_sequence_names_the_token_line(tmp_path):
    train = [[("EU", "B-ORG"), ("says", "O")], [("a", "O"), ("Peter", "I-PER"), ("said", "O")]]
    dataset(tmp_path, train=train, dev=DEV)
    with raises_data_error(tmp_path / "train.conll", "line 5: tag I-PER follows O (IOB2 needs B-PER first)", line=5):
        load(tmp_path)


def test_impossible_sequences_in_iobes_and_jsonl_name_the_token(tmp_path):
    write(tmp_path / "train.jsonl", jsonl([
        {"tokens": ["Ann", "Lee"], "tags": ["B-PER", "E-PER"]},
        {"tokens": ["Rome", "City", "x"], "tags": ["S-LOC", "E-LOC", "O"]},
    ]))
    write(tmp_path / "dev.jsonl", jsonl([{"tokens": ["Ann"], "tags": ["S-PER"]}]))
    with raises_data_error(tmp_path / "train.jsonl", "line 2: token 2 ('City'): tag E-LOC follows S-LOC "
                                              "(IOBES needs B-LOC first)", line=2):
        load(tmp_path)


def test_impossible_tags_per_scheme():
    assert impossible_tags(["O", "I-PER", "I-PER", "B-LOC", "I-PER"], "iob2") == [
        (1, "tag I-PER follows O (IOB2 needs B-PER first)"),
        (4, "tag I-PER follows B-LOC (IOB2 needs B-PER first)")]
    assert [j for j, _ in impossible_tags(["E-A", "B-A", "E-A", "I-A", "S-A", "E-A"], "iobes")] == [0, 3, 5]
    assert impossible_tags(["I-A", "O", "I-B", "B-B"], "iob1") == []


def test_repair_turns_impossible_i_into_b_and_counts(tmp_path):
    train = [[("a", "O"), ("Peter", "I-PER"), ("Smith", "I-PER")], [("Rome", "B-LOC"), ("Ann", "I-PER")]]
    dev = [[("Ann", "I-PER")], [("Rome", "B-LOC")]]
    dataset(tmp_path, train=train, dev=dev)
    ds = load(tmp_path, repair_tags=True)
    assert ds.train.tags == [["O", "B-PER", "I-PER"], ["B-LOC", "B-PER"]]
    assert ds.dev.tags == [["B-PER"], ["B-LOC"]]
    assert ds.repaired == {str(tmp_path / "train.conll"): 2, str(tmp_path / "dev.conll"): 1}
    assert ds.skipped == []
    assert repair_iob2(["O", "E-A", "S-B", "I-B"], "iobes") == (["O", "B-A", "B-B", "B-B"], 2)


# ------------------------------------------------------------------------------------ bad lines


def test_one_column_line_is_a_bad_row_with_its_line(tmp_path):
    write(tmp_path / "train.conll", "EU\tB-ORG\nrejects\n\nPeter\tB-PER\n")
    write(tmp_path / "dev.conll", "Peter\tB-PER\n")
    with raises_data_error(tmp_path / "train.conll", "one column only", line=2):
        load(tmp_path)


def test_bad_tag_text_is_a_bad_row(tmp_path):
    write(tmp_path / "train.conll", "EU\tORG\nx\tB-\ny\tb-PER\nPeter\tB-PER\n")
    write(tmp_path / "dev.conll", "Peter\tB-PER\n")
    with pytest.raises(DataError) as info:
        load(tmp_path)
    assert [(r.line, r.reason) for r in info.value.rows] == [
        (1, "tag 'ORG' is not O or B-, I-, E-, S- followed by a type"),
        (2, "tag 'B-' is not O or B-, I-, E-, S- followed by a type"),
        (3, "tag 'b-PER' is not O or B-, I-, E-, S- followed by a type")]


def test_jsonl_bad_lines_reported_together(tmp_path):
    path = write(tmp_path / "train.jsonl", jsonl([
        {"tokens": ["a", "b"], "tags": ["O", "B-PER"]},
        {"tokens": ["a", "b"], "tags": ["O"]},
        {"tokens": ["a", 3], "tags": ["O", "O"]},
        {"tokens": ["a"], "tags": [1]},
        {"tokens": ["a"]},
        "{not json",
        "[1, 2]",
        {"tokens": "a b", "tags": ["O", "O"]},
        {"tokens": [" "], "tags": ["O"]},
        {"tokens": ["Ann"], "tags": ["PER"]},
    ]))
    write(tmp_path / "dev.jsonl", jsonl([{"tokens": ["b"], "tags": ["B-PER"]}]))
    with raises_data_error(path, "9 bad rows (all of them below)") as info:
        load(tmp_path)
    assert [(r.line, r.reason) for r in info.value.rows] == [
        (2, "2 tokens but 1 tags"),
        (3, "'tokens' item 2 is int 3, not a string"),
        (4, "'tags' item 1 is int 1, not a string"),
        (5, "missing key 'tags' (found: 'tokens')"),
        (6, "not valid JSON (Expecting property name enclosed in double quotes)"),
        (7, "each line must be a JSON object with 'tokens' and 'tags'"),
        (8, "'tokens' must be a list of strings, found str"),
        (9, "token 1 is empty"),
        (10, "token 1 ('Ann'): tag 'PER' is not O or B-, I-, E-, S- followed by a type"),
    ]


def test_many_bad_lines_list_the_first_20_and_the_count(tmp_path):
    lines = [f"w{i}\tO\n\nx{i}\tI-PER\n\n" for i in range(25)]  # each I-PER starts a sentence
    path = write(tmp_path / "train.conll", "Ann\tB-PER\n\n" + "".join(lines))
    write(tmp_path / "dev.conll", "Ann\tB-PER\n")
    with raises_data_error(path, "25 bad rows (the first 20 below)",
                    "  line 5: tag I-PER starts the sentence (IOB2 needs B-PER first)") as info:
        load(tmp_path)
    assert [r.line for r in info.value.rows] == [5 + 4 * i for i in range(25)]
    message = str(info.value)
    assert "line 81:" in message and "line 85:" not in message  # the 20th is listed, the 21st is not


def test_structural_and_sequence_problems_of_a_file_come_together_in_line_order(tmp_path):
    path = write(tmp_path / "train.conll", "a\tO\nb\tI-PER\n\nlonely\n\nc\tB-PER\n")
    write(tmp_path / "dev.conll", "c\tB-PER\n")
    with raises_data_error(path, "2 bad rows") as info:
        load(tmp_path)
    assert [r.line for r in info.value.rows] == [2, 4]


def test_skip_drops_bad_sentences_and_records_each_problem(tmp_path):
    write(tmp_path / "train.conll",
          "EU\tB-ORG\nsays\tO\n\n"              # kept
          "a\tO\nb\tI-PER\nc\tI-LOC\n\n"        # two impossible tags: dropped
          "lonely\nd\tO\n\n"                    # a line without a tag: dropped whole
          "Ann\tB-PER\n")                       # kept
    write(tmp_path / "dev.conll", "Ann\tB-PER\n\nRome\tB-LOC\n\nEU\tB-ORG\n")
    ds = load(tmp_path, on_bad_rows="skip")
    assert ds.train.sentences == [["EU", "says"], ["Ann"]]
    assert ds.train.line_numbers == [1, 11]
    train_file, dev_file = str(tmp_path / "train.conll"), str(tmp_path / "dev.conll")
    assert [(r.path, r.line) for r in ds.skipped] == [(train_file, 5), (train_file, 6), (train_file, 8),
                                                      (dev_file, 3)]
    assert "type 'LOC' never appears in the training split" in ds.skipped[-1].reason
    assert ds.dev.sentences == [["Ann"], ["EU"]]
    assert ds.tag_map.names == ["B-ORG", "B-PER", "I-ORG", "I-PER", "O"]


def test_unseen_dev_tag_names_file_and_line(tmp_path):
    dataset(tmp_path, train=TRAIN, dev=DEV)  # training has no LOC
    dev_file = tmp_path / "dev.conll"
    with raises_data_error(dev_file, "2 bad rows", "line 1: tag 'B-LOC': type 'LOC' never appears in the training split "
                    "(known types: MISC, ORG, PER)", "line 4: tag 'B-LOC'") as info:
        load(tmp_path)
    assert [r.line for r in info.value.rows] == [1, 4]
    write(dev_file, "Paris\tB-LOC\n")
    with raises_data_error(dev_file, "tag 'B-LOC': type 'LOC' never appears", line=1):
        load(tmp_path)


def test_undecodable_line_is_a_bad_row_and_does_not_split_the_sentence(tmp_path):
    write(tmp_path / "train.conll", b"EU\tB-ORG\ncaf\xe9\tO\nsays\tO\n\nAnn\tB-PER\n")
    write(tmp_path / "dev.conll", "Ann\tB-PER\n")
    with raises_data_error(tmp_path / "train.conll", "bytes that are not UTF-8 at byte 12", line=2):
        load(tmp_path)
    ds = load(tmp_path, on_bad_rows="skip")
    assert ds.train.sentences == [["Ann"]]  # "says" is not left behind as a sentence of its own
    assert load(tmp_path, encoding="auto").train.sentences[0] == ["EU", "café", "says"]


def test_whole_file_problems(tmp_path):
    write(tmp_path / "train.conll", " \n\t\n")
    write(tmp_path / "dev.conll", "Ann\tB-PER\n")
    with raises_data_error(tmp_path / "train.conll", "file is empty"):
        load(tmp_path)
    write(tmp_path / "train.conll", "-DOCSTART- O\n\n")
    with raises_data_error(tmp_path / "train.conll", "no sentences"):
        load(tmp_path)
    write(tmp_path / "train.conll", "a\tO\nb\tO\n")
    with raises_data_error(tmp_path / "train.conll", "only one class"):
        load(tmp_path)
    with raises_data_error(tmp_path / "nowhere", "no such dataset directory"):
        load(tmp_path / "nowhere")


# ------------------------------------------------------------------ against an independent reader


@pytest.mark.parametrize("scheme", ["iob1", "iob2", "iobes"])
def test_converted_tags_have_the_entities_seqeval_reads_in_the_original(scheme):
    """seqeval's get_entities reads IOB1, IOB2 and IOBES alike (leniently: an impossible I- starts an
    entity). On any tag sequence, our IOB2 (after repair) must hold the same entities, and be valid."""
    sequence_labeling = needed("seqeval.metrics.sequence_labeling", what="the conlleval-reading test")
    prefixes = {"iob1": "BI", "iob2": "BI", "iobes": "BIES"}[scheme]
    alphabet = ["O"] + [f"{p}-{t}" for p in prefixes for t in ("A", "B")]
    rng = random.Random(1)
    for _ in range(2000):
        tags = [rng.choice(alphabet) for _ in range(rng.randrange(0, 9))]
        iob2, _ = repair_iob2(tags, scheme)
        assert impossible_tags(iob2, "iob2") == []
        assert sequence_labeling.get_entities(iob2) == sequence_labeling.get_entities(tags), (scheme, tags, iob2)
