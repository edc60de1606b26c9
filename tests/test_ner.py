"""Token classification (NER): word alignment, per-word logits, the ragged per-word cache, the
token-level KD rows, seqeval figures, and the stages end to end on tiny models (one student with a
character-level tokenizer the teacher does not share)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.cache import CacheError, CacheSettings, CacheSpec, open_logit_cache, write_logit_cache
from distill.config import ConfigError
from distill.losses import kd_loss, kd_loss_reference
from distill.ner import (
    AlignmentError,
    align_words,
    gather_words,
    ner_scores,
    predicted_tags,
    sentence_split,
    teacher_rows,
    word_batch,
    word_logits_from_batches,
    word_logits_numpy,
)
from distill.ner_data import TokenSplit
from distill.tokens import NO_LABEL

ROOT = Path(__file__).resolve().parents[1]
TAGS = {"O": 0, "B-loc": 1, "I-loc": 2, "B-per": 3, "I-per": 4}


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def split_of(sentences, tags=None) -> TokenSplit:
    return TokenSplit(sentences=sentences, tags=tags, source="test.conll")


# ------------------------------------------------------------------------------------ alignment


def test_first_sub_token_carries_the_label(minilm_tokenizer):
    words = ["Heya", "Washington", "unbelievably", "x"]
    aligned = align_words(minilm_tokenizer, split_of([words], [["O", "B-loc", "O", "B-per"]]), TAGS, 64)
    tokens = minilm_tokenizer.convert_ids_to_tokens(aligned.tokens.row(0))
    assert tokens == ["[CLS]", "hey", "##a", "washington", "un", "##bel", "##ie", "##va", "##bly", "x", "[SEP]"]
    assert aligned.first.tolist() == [1, 3, 4, 9]  # hey, washington, un, x
    assert aligned.word_labels.tolist() == [0, 1, 0, 3]
    # the token-level view: the label on each word's first sub-token, NO_LABEL everywhere else
    per_token = np.full(len(tokens), NO_LABEL)
    per_token[aligned.first] = aligned.word_labels
    assert per_token.tolist() == [NO_LABEL, 0, NO_LABEL, 1, 0, NO_LABEL, NO_LABEL, NO_LABEL, NO_LABEL, 3, NO_LABEL]
    assert aligned.words_cut == 0 and aligned.summary()["words"] == 4


def test_max_length_cuts_words_only_at_the_end_and_counts_them(minilm_tokenizer):
    sentences = [["a", "unbelievably", "b", "c", "d"], ["short", "one"], ["z"] * 12]
    tags = [["O"] * 5, ["O", "B-per"], ["O"] * 12]
    aligned = align_words(minilm_tokenizer, split_of(sentences, tags), TAGS, 8)
    assert aligned.tokens.lengths.tolist() == [8, 4, 8]  # special tokens kept at the end of a cut row
    # sentence 0: [CLS] a un ##bel ##ie ##va ##bly [SEP]: "a" and "unbelievably" kept, b c d cut
    assert aligned.kept.tolist() == [2, 2, 6] and aligned.words.tolist() == [5, 2, 12]
    assert aligned.words_cut == 3 + 6 and aligned.sentences_cut == 2
    assert minilm_tokenizer.convert_ids_to_tokens(aligned.tokens.row(0))[-1] == "[SEP]"
    assert aligned.tokens.source_lengths.tolist() == [11, 4, 14]  # before the cut
    # evaluation: the cut words are predicted O
    logits = np.zeros((len(aligned.first), len(TAGS)), dtype=np.float32)
    logits[:, TAGS["B-per"]] = 1.0
    pred = predicted_tags(logits, aligned, list(TAGS))
    assert pred[0] == ["B-per", "B-per", "O", "O", "O"] and len(pred[2]) == 12 and pred[2][6:] == ["O"] * 6


def test_word_without_tokens_is_read_as_unknown_and_slow_tokenizers_refused(minilm_tokenizer, minilm_path):
    from transformers import BertTokenizer

    aligned = align_words(minilm_tokenizer, split_of([["a", "\u200b", "b"]], [["O", "B-loc", "O"]]), TAGS, 32)
    assert aligned.empty_words == 1 and aligned.kept.tolist() == [3]
    assert minilm_tokenizer.convert_ids_to_tokens(aligned.tokens.row(0)) == ["[CLS]", "a", "[UNK]", "b", "[SEP]"]
    assert aligned.word_labels.tolist() == [0, 1, 0]
    with pytest.raises(AlignmentError, match="fast tokenizer"):
        align_words(BertTokenizer.from_pretrained(minilm_path), split_of([["a"]]), None, 8)


def test_per_word_logits_equal_direct_indexing(minilm_tokenizer):
    rng = np.random.default_rng(0)
    sentences = [["alpha", "beta", "unbelievably"], ["x"], ["Washington", "is", "a", "capital", "city"]]
    aligned = align_words(minilm_tokenizer, split_of(sentences), None, 64)
    rows = np.array([2, 0, 1])
    logits = rng.standard_normal((3, int(aligned.tokens.lengths.max()), 4)).astype(np.float32)  # (B, L, C)
    direct = np.concatenate([logits[b, aligned.first[aligned.word_offsets[r]:aligned.word_offsets[r + 1]]]
                             for b, r in enumerate(rows)])
    picked, index = word_logits_numpy(logits, aligned, rows)
    np.testing.assert_array_equal(picked, direct)
    assert index.tolist() == [4, 5, 6, 7, 8, 0, 1, 2, 3]  # their rows in word order
    positions, mask, _ = aligned.grid(rows)
    torch_words = gather_words(torch.from_numpy(logits), torch.from_numpy(positions)).numpy()
    np.testing.assert_array_equal(torch_words[mask], direct)
    # batches in a sorted order, back to word order
    order = np.array([1, 0, 2])
    outputs = [np.stack([logits[2], logits[1]]), logits[[0]]]  # two batches: sentences 1 and 0, then 2
    by_word = word_logits_from_batches(outputs, order, aligned)
    expected = np.zeros_like(by_word)
    for b, s in enumerate([1, 0, 2]):
        src = outputs[0][b] if b < 2 else outputs[1][0]
        a, z = aligned.word_offsets[s], aligned.word_offsets[s + 1]
        expected[a:z] = src[aligned.first[a:z]]
    np.testing.assert_array_equal(by_word, expected)


def test_predict_word_logits_equal_the_models_first_sub_token_logits(tiny_bert_dir, minilm_tokenizer):
    from distill.modeling import load_classifier
    from distill.ner import predict_word_logits

    torch.manual_seed(0)
    model = load_classifier(str(tiny_bert_dir), id2label=dict(enumerate(TAGS)), task="ner").eval()
    sentences = [["Washington", "unbelievably", "a"], ["b"], ["c", "d", "Carol", "Smith"], ["x"] * 7]
    aligned = align_words(minilm_tokenizer, split_of(sentences), None, 64)
    got = predict_word_logits(model, aligned, batch_size=2, device=torch.device("cpu"))  # sorted batches of 2
    want = []
    with torch.no_grad():
        for s in range(len(sentences)):  # one sentence at a time, no padding
            logits = model(**aligned.tokens.batch(np.array([s]), torch.device("cpu"))).logits[0]  # (L, C)
            want.append(logits[aligned.first[aligned.word_offsets[s]:aligned.word_offsets[s + 1]]].numpy())
    np.testing.assert_allclose(got, np.concatenate(want), atol=1e-5)


# ------------------------------------------------------------------------------------ KD rows


def test_token_level_kd_rows_and_row_mask_match_the_reference(minilm_tokenizer):
    torch.manual_seed(0)
    sentences = [["Washington", "unbelievably", "a"], ["b"], ["c", "d"]]
    tags = [["B-loc", "O", "O"], ["B-per"], ["O", "I-per"]]
    aligned = align_words(minilm_tokenizer, split_of(sentences, tags), TAGS, 64)
    rows = np.array([0, 1, 2])
    length = int(aligned.tokens.lengths.max())
    student = torch.randn(3, length, 5, requires_grad=True)  # (B, L, C)
    words, labels, mask, width = word_batch(student, aligned, rows)
    assert width == 3 and words.shape == (9, 5) and mask.tolist() == [1, 1, 1, 1, 0, 0, 1, 1, 0]
    assert labels.tolist() == [1, 0, 0, 3, NO_LABEL, NO_LABEL, 0, 4, NO_LABEL]
    teacher = torch.randn(9, 5)
    teacher[~mask] = 1e4  # padding rows: whatever finite values are there must not matter
    got = kd_loss(words, teacher, labels, temperature=2.0, w_kd=0.7, w_ce=0.3, row_mask=mask)
    # the reference on the real words only, gathered by hand from the first sub-tokens
    first = torch.from_numpy(aligned.first.astype(np.int64))
    sentence_of = np.repeat(np.arange(3), aligned.kept)
    by_hand = student[torch.from_numpy(sentence_of), first]  # (6, C)
    want = kd_loss_reference(by_hand, teacher[mask], torch.from_numpy(aligned.word_labels), temperature=2.0,
                             w_kd=0.7, w_ce=0.3)
    torch.testing.assert_close(got.loss, want.loss)
    torch.testing.assert_close(got.kd, want.kd)
    got.loss.backward()
    grad = student.grad.abs().sum(-1)  # (B, L): only first sub-tokens of real words get a gradient
    hit = torch.zeros_like(grad, dtype=torch.bool)
    hit[torch.from_numpy(sentence_of), first] = True
    assert bool((grad[~hit] == 0).all()) and bool((grad[hit] > 0).all())


def test_teacher_rows_map_words_to_the_cache():
    offsets = np.array([0, 3, 3, 5])  # sentence 1 has no rows (say, everything cut)
    rows = teacher_rows(offsets, np.array([2, 0, 1]), 4)
    assert rows.tolist() == [[3, 4, -1, -1], [0, 1, 2, -1], [-1, -1, -1, -1]]


# ------------------------------------------------------------------------------------ seqeval


def test_seqeval_scores_on_a_hand_made_example():
    true = [["B-per", "I-per", "O", "B-loc"], ["B-loc", "O", "B-per"]]
    pred = [["B-per", "I-per", "O", "O"], ["B-loc", "O", "B-loc"]]
    m = ner_scores(true, pred)
    # per: 2 gold, 1 found (the second predicted as loc): P 1/1, R 1/2
    # loc: 2 gold, predicted 2 (one right, one wrong): P 1/2, R 1/2
    assert m["per_type"]["per"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_type"]["loc"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert m["token_accuracy"] == pytest.approx(5 / 7) and m["entities"] == 4
    # the lenient (conlleval) reading: an I-X after O starts an entity
    assert ner_scores([["B-per", "I-per"]], [["O", "I-per"]])["per_type"]["per"]["precision"] == 0.0
    assert ner_scores([["I-per"]], [["B-per"]])["f1"] == 1.0


# ------------------------------------------------------------------------------------ the ragged cache


@pytest.fixture
def ragged(tmp_path):
    from distill.cache import fingerprint_parts

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "model.safetensors").write_bytes(b"weights" * 50)
    (teacher / "tokenizer.json").write_text("{}")
    data = tmp_path / "train.conll"
    data.write_text("x\tO\n")
    sentences = [[f"w{i}_{j}" for j in range(1 + i % 4)] for i in range(11)]
    split = split_of(sentences)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sentences])])  # (12,)
    parts = fingerprint_parts(teacher_dir=teacher, max_length=32, data_files=[str(data)], split=sentence_split(split))
    return split, offsets, parts, tmp_path / "logits", teacher


def word_scores(offsets):
    calls = []

    def score(start, stop):
        calls.append((start, stop))
        rows = np.arange(offsets[start], offsets[stop], dtype=np.float32)[:, None]
        return np.sin(rows + np.arange(3, dtype=np.float32)) * 5

    return score, calls


def write_ragged(score, directory, split, offsets, parts, *, max_chunks=None):
    return write_logit_cache(score, cache=CacheSpec(directory=directory, name="train", split=sentence_split(split),
                                                    num_labels=3, label_names=["O", "B-x", "I-x"], parts=parts,
                                                    row_offsets=offsets),
                             settings=CacheSettings(chunk_rows=3, max_chunks=max_chunks))


def test_ragged_cache_round_trip(ragged):
    split, offsets, parts, directory, _ = ragged
    score, calls = word_scores(offsets)
    write_ragged(score, directory, split, offsets, parts)
    assert calls == [(0, 3), (3, 6), (6, 9), (9, 11)]  # chunks of sentences
    assert sorted(p.name for p in directory.iterdir()) == ["train.manifest.json", "train.npy", "train.offsets.npy",
                                                           "train.texthash.npy"]
    cache = open_logit_cache(directory, "train", expected_parts=parts)
    cache.check_rows(sentence_split(split))
    assert cache.logits.shape == (int(offsets[-1]), 3) and isinstance(cache.logits, np.memmap)
    np.testing.assert_array_equal(cache.offsets, offsets)
    whole, _ = word_scores(offsets)
    np.testing.assert_array_equal(np.asarray(cache.logits), whole(0, 11))
    manifest = json.loads((directory / "train.manifest.json").read_text())
    assert manifest["rows"] == 11 and manifest["shape"] == [int(offsets[-1]), 3]
    again, calls = word_scores(offsets)
    write_ragged(again, directory, split, offsets, parts)
    assert calls == []  # complete and intact: not scored again


def test_ragged_cache_resumes_byte_identical(ragged, tmp_path):
    split, offsets, parts, directory, _ = ragged
    score, _ = word_scores(offsets)
    write_ragged(score, tmp_path / "straight", split, offsets, parts)
    first, calls = word_scores(offsets)

    def failing(start, stop):
        if start == 6:
            raise KeyboardInterrupt("killed")
        return first(start, stop)

    with pytest.raises(KeyboardInterrupt):
        write_ragged(failing, directory, split, offsets, parts)
    assert (directory / "train.npy.partial").exists() and not (directory / "train.manifest.json").exists()
    with pytest.raises(CacheError, match="unfinished write"):
        open_logit_cache(directory, "train", expected_parts=parts)
    rest, calls = word_scores(offsets)
    write_ragged(rest, directory, split, offsets, parts)
    assert calls == [(6, 9), (9, 11)]  # only the chunks not done
    assert (directory / "train.npy").read_bytes() == (tmp_path / "straight" / "train.npy").read_bytes()
    # time-boxed: one chunk per call, resumable
    boxed = tmp_path / "boxed"
    for _ in range(3):
        assert write_ragged(word_scores(offsets)[0], boxed, split, offsets, parts, max_chunks=1) is None
    assert write_ragged(word_scores(offsets)[0], boxed, split, offsets, parts, max_chunks=1) is not None
    assert (boxed / "train.npy").read_bytes() == (tmp_path / "straight" / "train.npy").read_bytes()


def test_ragged_cache_refuses_stale_truncated_and_corrupted(ragged):
    from distill.cache import fingerprint_parts

    split, offsets, parts, directory, teacher = ragged
    write_ragged(word_scores(offsets)[0], directory, split, offsets, parts)
    (teacher / "model.safetensors").write_bytes(b"other weights")
    stale = fingerprint_parts(teacher_dir=teacher, max_length=32, data_files=[str(directory.parent / "train.conll")],
                              split=sentence_split(split))
    with pytest.raises(CacheError, match="stale logit cache .*teacher_weights"):
        open_logit_cache(directory, "train", expected_parts=stale)
    other = split_of([*split.sentences[:-1], ["changed"]])
    with pytest.raises(CacheError, match="row 10 of the cache was made from different text"):
        open_logit_cache(directory, "train", expected_parts=parts).check_rows(sentence_split(other))
    offsets_file = directory / "train.offsets.npy"
    good = offsets_file.read_bytes()
    np.save(offsets_file, offsets[:-1])  # truncated: one sentence short
    with pytest.raises(CacheError, match="do not fit 11 rows"):
        open_logit_cache(directory, "train", expected_parts=parts)
    swapped = offsets.copy()
    swapped[3], swapped[4] = swapped[3] - 1, swapped[4]  # same length and end, other boundaries
    np.save(offsets_file, swapped)
    with pytest.raises(CacheError, match="offsets.npy: contents do not match .*corrupted"):
        open_logit_cache(directory, "train", expected_parts=parts)
    offsets_file.unlink()
    with pytest.raises(CacheError, match="offsets.npy: missing or unreadable"):
        open_logit_cache(directory, "train", expected_parts=parts)
    offsets_file.write_bytes(good)
    array = directory / "train.npy"
    with open(array, "r+b") as handle:
        handle.truncate(array.stat().st_size - 4)
    with pytest.raises(CacheError, match="truncated or replaced"):
        open_logit_cache(directory, "train", expected_parts=parts)


# ------------------------------------------------------------------------------------ the stages


NAMES = ["Alice", "Bob", "Carol Smith", "Dan", "Eve Jones", "Frank"]
PLACES = ["Paris", "New York", "Rome", "Berlin", "Los Angeles"]


def ner_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        person, place = rng.choice(NAMES).split(), rng.choice(PLACES).split()
        tagged = ([("yesterday", "O")] * rng.randint(0, 1) + [(w, ("B-" if i == 0 else "I-") + "per")
                                                             for i, w in enumerate(person)]
                  + [("flew", "O"), ("to", "O")] + [(w, ("B-" if i == 0 else "I-") + "loc") for i, w in enumerate(place)]
                  + [("unbelievably", "O"), ("!", "O")] * rng.randint(0, 2))
        out.append(tagged)
    return out


def write_conll(path: Path, sentences) -> None:
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def ner_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ner_data")
    write_conll(out / "train.conll", ner_sentences(64, 0))
    write_conll(out / "dev.conll", ner_sentences(16, 1))
    return out


@pytest.fixture(scope="module")
def char_model_dir(tmp_path_factory, ner_data) -> Path:
    """A tiny random BERT whose fast tokenizer splits every word into characters (WordPiece over
    single characters): another tokenizer than the teacher's, aligning to the same words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("char_bert")
    chars = sorted(set("".join(NAMES + PLACES + ["yesterday", "flew", "to", "unbelievably", "!"]).lower()) - {" "})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + chars + [f"##{c}" for c in chars])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(out)
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(out)
    return out


TEACHER_ARGS = ["--max_length=32", "--epochs=2", "--holdout_rows=0", "--batch_size=16", "--lr=3e-3", "--evals_per_epoch=1",
                "--patience=0", "--eval_batch_size=32", "--progress=false", "--cache_chunk_rows=10"]
STUDENT_ARGS = ["--max_length=32", "--epochs=2", "--ce_epochs=2", "--holdout_rows=0", "--batch_size=16", "--lr=3e-3",
                "--evals_per_epoch=1", "--patience=0", "--eval_batch_size=32", "--progress=false"]


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory, ner_data, tiny_bert_dir) -> Path:
    from students.distill import main as distill_main
    from teachers.finetune import main as teacher_main

    run = tmp_path_factory.mktemp("ner_run")
    assert teacher_main(["--task=ner", "--data", str(ner_data), "--run-dir", str(run),
                         f"--base_model={tiny_bert_dir}", *TEACHER_ARGS]) == 0
    assert distill_main(["--run-dir", str(run), *STUDENT_ARGS]) == 0
    return run


def test_teacher_and_students_write_ner_outputs(ner_run, ner_data):
    teacher = json.loads((ner_run / "teacher" / "metrics.json").read_text())
    info = json.loads((ner_run / "teacher" / "distill.json").read_text())
    assert info["task"] == "ner" and info["labels"] == ["B-loc", "B-per", "I-loc", "I-per", "O"]
    assert info["data"]["path"] == str(ner_data) and "tag_scheme" in info["data"]
    assert set(teacher["per_type"]) == {"loc", "per"} and teacher["entities"] == 32
    assert {"f1", "precision", "recall", "macro_f1", "token_accuracy", "peak_rss_mb"} <= set(teacher)
    assert teacher["entity_f1"] == teacher["f1"] and teacher["alignment"]["words_cut"] == 0
    cache = open_logit_cache(ner_run / "teacher" / "logits", "train", expected_parts=None)
    words = sum(len(s) for s in ner_sentences(64, 0))
    assert cache.logits.shape == (words, 5) and cache.offsets[-1] == words and len(cache.offsets) == 65
    assert teacher["cache"]["train"]["logit_rows"] == words
    for role in ("student", "student_ce"):
        m = json.loads((ner_run / role / "metrics.json").read_text())
        assert m["role"] == role and set(m["per_type"]) == {"loc", "per"} and m["words_without_teacher_logits"] == 0
        assert json.loads((ner_run / role / "distill.json").read_text())["task"] == "ner"
        assert ("kd" in m["history"][0]) == (role == "student")  # the control reads no teacher
        assert json.loads((ner_run / role / "config.json").read_text())["architectures"] == \
            ["BertForTokenClassification"]
    report = (ner_run / "report.md").read_text()
    assert "entity F1" in report and "| loc | 16 |" in report and "KD gain over CE-only" in report


def ner_card(folder: Path) -> tuple[dict, dict, str]:
    """(front matter as yaml.safe_load reads it, its model-index figures name -> value, body) of a card."""
    import yaml

    head, body = (folder / "README.md").read_text(encoding="utf-8")[len("---\n"):].split("\n---\n", 1)
    meta = yaml.safe_load(head)
    [result] = meta["model-index"][0]["results"]
    return meta, {m["name"]: m["value"] for m in result["metrics"]}, body


def test_ner_models_have_cards_with_their_figures(ner_run):
    for role in ("teacher", "student", "student_ce"):
        meta, got, body = ner_card(ner_run / role)
        m = json.loads((ner_run / role / "metrics.json").read_text())
        assert (meta["pipeline_tag"], meta["metrics"]) == ("token-classification", ["seqeval", "accuracy"])
        assert got == {"dev entity F1 (seqeval, micro)": m["f1"], "dev entity precision": m["precision"],
                       "dev entity recall": m["recall"], "dev token accuracy": m["token_accuracy"]}
        assert f"| dev entity F1 (seqeval, micro) | {m['f1']:.4f} |" in body
        assert f'AutoModelForTokenClassification.from_pretrained("{ner_run / role}")' in body
        assert "- 5 IOB2 tags, id: name: 0: `B-loc`" in body and "- max length: **32 tokens**" in body
        assert f"{m['labelled_rows'] if role != 'teacher' else m['train_rows']} labelled sentences" in body


@pytest.mark.parametrize("strategy", ["lora", "frozen", "top-n"])
def test_ner_teacher_strategies(strategy, ner_data, tiny_bert_dir, tmp_path):
    from safetensors.torch import load_file

    from teachers.finetune import main as teacher_main

    args = [*TEACHER_ARGS, "--epochs=1"]
    assert teacher_main(["--task=ner", "--data", str(ner_data), "--run-dir", str(tmp_path), f"--strategy={strategy}",
                         f"--base_model={tiny_bert_dir}", *args]) == 0
    metrics = json.loads((tmp_path / "teacher" / "metrics.json").read_text())
    assert metrics["strategy"] == strategy and 0 < metrics["trainable_parameters"] < metrics["parameters"]
    saved = load_file(tmp_path / "teacher" / "model.safetensors")
    assert not [k for k in saved if "lora" in k]  # LoRA merged into plain weights
    assert saved["classifier.weight"].shape == (5, 32)  # a tag per token
    base = load_file(tiny_bert_dir / "model.safetensors")
    same = torch.equal(saved["bert.encoder.layer.0.attention.self.query.weight"],
                       base["encoder.layer.0.attention.self.query.weight"])
    assert same == (strategy in ("frozen", "top-n"))  # lora merges deltas into the query projection


def test_student_refuses_a_stale_per_word_cache(ner_run, tmp_path):
    import shutil

    from students.distill import main as distill_main

    run = tmp_path / "run"
    shutil.copytree(ner_run / "teacher", run / "teacher")
    data = Path(json.loads((run / "teacher" / "distill.json").read_text())["data"]["path"])
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    info = json.loads((run / "teacher" / "distill.json").read_text())
    info["data"]["path"] = str(copy)
    (run / "teacher" / "distill.json").write_text(json.dumps(info))
    with (copy / "train.conll").open("a") as handle:
        handle.write("\n")  # other bytes, same sentences: the fingerprint covers the files
    with pytest.raises(CacheError, match="stale logit cache .*data_files"):
        distill_main(["--run-dir", str(run), *STUDENT_ARGS, "--student_ce=false"])


def test_student_with_another_tokenizer_aligns_to_the_same_words(ner_run, char_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from students.distill import main as distill_main

    words = [["Carol", "Smith", "flew", "to", "Los", "Angeles"]]
    chars = align_words(AutoTokenizer.from_pretrained(char_model_dir), split_of(words), None, 64)
    word_pieces = align_words(AutoTokenizer.from_pretrained(ner_run / "teacher"), split_of(words), None, 64)
    assert chars.tokens.lengths[0] == 2 + sum(len(w) for w in words[0])  # a token per character
    assert chars.kept.tolist() == word_pieces.kept.tolist() == [6]  # the same six words
    run = tmp_path / "run"
    assert distill_main(["--run-dir", str(run), f"--teacher_dir={ner_run / 'teacher'}", "--student=pretrained",
                         f"--pretrained={char_model_dir}", "--student_ce=false", *STUDENT_ARGS,
                         "--max_length=96"]) == 0
    m = json.loads((run / "student" / "metrics.json").read_text())
    assert m["student"] == {"kind": "pretrained", "pretrained": str(char_model_dir)}
    assert m["words_without_teacher_logits"] == 0 and m["train_alignment"]["words_cut"] == 0
    assert m["train_words"] == sum(len(s) for s in ner_sentences(64, 0))
    assert "kd" in m["history"][0] and np.isfinite(m["history"][0]["kd"])
    # a shorter student max length cuts words of its own: they drop out of its batches, and every word
    # it keeps still finds its teacher row
    short = tmp_path / "short"
    assert distill_main(["--run-dir", str(short), f"--teacher_dir={ner_run / 'teacher'}", "--student=pretrained",
                         f"--pretrained={char_model_dir}", "--student_ce=false", *STUDENT_ARGS,
                         "--max_length=24"]) == 0
    m = json.loads((short / "student" / "metrics.json").read_text())
    assert m["train_alignment"]["words_cut"] > 0 and m["words_without_teacher_logits"] == 0


def test_ner_settings_that_are_classification_only_are_errors(ner_data, tiny_bert_dir, tmp_path, ner_run):
    from students.distill import main as distill_main
    from teachers.finetune import main as teacher_main

    base = ["--run-dir", str(tmp_path), f"--base_model={tiny_bert_dir}", *TEACHER_ARGS]
    with pytest.raises(ConfigError, match="augmented transfer set and --augment_factor apply to classification only"):
        teacher_main(["--task=ner", "--data", str(ner_data), "--transfer=augmented", *base])
    with pytest.raises(ConfigError, match="needs --data=<a NER dataset directory>"):
        teacher_main(["--task=ner", *base])
    with pytest.raises(ConfigError, match="--task=sentiment: expected one of classification, ner"):
        teacher_main(["--task=sentiment", "--data", str(ner_data), *base])
    with pytest.raises(ConfigError, match="--w_hidden apply to classification only"):
        distill_main(["--run-dir", str(tmp_path), f"--teacher_dir={ner_run / 'teacher'}", "--w_hidden=1",
                      *STUDENT_ARGS])
    from experiments.compare import main as compare_main

    with pytest.raises(ConfigError, match=r"unknown arm\(s\) \['kd_layers'\] for a ner teacher"):
        compare_main(["--run-dir", str(ner_run), "--arms=ce,kd_layers"])


@pytest.mark.slow
def test_export_bench_and_predict_a_token_classifier(ner_run, tmp_path):
    """export (three variants, validated; ORTModelForTokenClassification loads them) -> bench ->
    predict, on the tiny teacher and student."""
    import shutil

    from optimum.onnxruntime import ORTModelForTokenClassification

    from export.onnx_export import main as export_main

    run = tmp_path / "run"
    for name in ("teacher", "student"):
        shutil.copytree(ner_run / name, run / name)
    # 32 dev entities: one int8 flip of a near-tied word moves the entity F1 by ~3 points, so that bound is
    # loosened here; decided words must still keep their tags
    assert export_main(["--run-dir", str(run), "--int8_max_f1_delta=0.2"]) == 0
    report = json.loads((run / "onnx" / "validation.json").read_text())
    assert report["passed"]
    for name in ("teacher", "student"):
        own = report["models"][name]
        assert own["task"] == "ner" and own["dev_words"] == sum(len(s) for s in ner_sentences(16, 1))
        checks = [c["name"] for c in own["variants"]["int8"]["checks"]]
        assert checks[-4:] == ["dev_decided_agreement", "dev_logit_error", "dev_entity_f1", "loads_with_optimum"]
        for variant in ("fp32", "o2"):
            figures = own["variants"][variant]["figures"]
            assert figures["max_abs_diff"] <= 1e-4 and figures["agreement"] == 1.0
            assert figures["entity_f1"] == pytest.approx(own["pytorch_fp32"]["entity_f1"])
        model = ORTModelForTokenClassification.from_pretrained(run / "onnx" / name / "int8")
        assert model.config.id2label[0] == "B-loc"
        for variant in ("fp32", "o2", "int8"):  # each variant's card: its own validation figures
            meta, got, body = ner_card(run / "onnx" / name / variant)
            figures = own["variants"][variant]["figures"]
            assert meta["library_name"] == "optimum" and meta["pipeline_tag"] == "token-classification"
            assert got == {"dev entity F1 (seqeval, micro)": figures["entity_f1"],
                           "dev token accuracy": figures["token_accuracy"],
                           "dev word tags equal to PyTorch fp32's": figures["agreement"]}
            assert f'ORTModelForTokenClassification.from_pretrained("{run / "onnx" / name / variant}")' in body
    proc = subprocess.run([sys.executable, "-m", "distill", "bench", "--run-dir", str(run), "--threads=1",
                           "--reps_b1=20", "--reps_fixed=5", "--batches=1", "--batch_size=8", "--warmup=2",
                           "--gemm_sizes=32x32x32", "--gemm_repeats=1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((run / "bench" / "bench.json").read_text())["rows"]
    assert len(rows) == 6 and all("dev_entity_f1" in r and r["task"] == "ner" for r in rows)
    int8 = next(r for r in rows if (r["model"], r["variant"]) == ("student", "ort_int8"))
    for folder in (run / "student", run / "onnx" / "student" / "int8"):  # bench rewrote the cards with its latency
        assert f"| ort_int8 | {int8['dev_entity_f1']:.4f} |" in ner_card(folder)[2]
        assert f"{int8['p50_b1_ms']:.2f} / {int8['p90_b1_ms']:.2f}" in ner_card(folder)[2]
    assert "entity F1" in (run / "bench" / "bench.md").read_text()
    text = "yesterday Carol Smith flew to Los Angeles\n\nBob went to Rome !\n"
    proc = subprocess.run([sys.executable, "-m", "distill", "predict", "--model", str(run / "onnx" / "student" / "int8")],
                          cwd=ROOT, input=text, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["line"] for r in out] == [1, 3] and out[0]["tokens"][1:3] == ["Carol", "Smith"]
    assert len(out[0]["tags"]) == 7
    for row in out:
        for e in row["entities"]:
            assert row["text"][e["char_start"]:e["char_end"]] == e["text"] and 0 <= e["score"] <= 1
            assert e["text"] == " ".join(row["tokens"][e["start"]:e["end"]])


# ------------------------------------------------------------------------------------ transfer sets


def test_transfer_files_become_label_free_sentences(tmp_path):
    from distill.data import DataError
    from distill.ner_transfer import check_sources, file_keys, read_sentences

    lines = tmp_path / "more.txt"
    lines.write_text("Carol flew to Rome, yesterday!\n\n   \nBob  went home\n", encoding="utf-8")
    split, empty = read_sentences(lines, transfer_format="auto", word_pattern=None)
    assert split.sentences == [["Carol", "flew", "to", "Rome,", "yesterday!"], ["Bob", "went", "home"]]
    assert split.tags is None and empty == 2 and split.line_numbers == [1, 4]
    split, _ = read_sentences(lines, transfer_format="lines", word_pattern=r"\w+|[^\w\s]")
    assert split.sentences[0] == ["Carol", "flew", "to", "Rome", ",", "yesterday", "!"]
    conll = tmp_path / "tagged.conll"  # tags dropped; a one-column sentence is as good
    conll.write_text("-DOCSTART- -X- O O\n\nEU NNP I-ORG\nrejects VBZ O\n\nPeter\nBlackburn\n", encoding="utf-8")
    assert read_sentences(conll, transfer_format="auto", word_pattern=None)[0].sentences == \
        [["EU", "rejects"], ["Peter", "Blackburn"]]
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"tokens": ["a", "b"], "tags": ["O", "O"]}\n{"tokens": ["c"]}\n', encoding="utf-8")
    assert read_sentences(jsonl, transfer_format="auto", word_pattern=None)[0].sentences == [["a", "b"], ["c"]]
    jsonl.write_text('{"tokens": ["a", 3]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"s.jsonl, line 1: each line must be an object whose 'tokens'"):
        read_sentences(jsonl, transfer_format="auto", word_pattern=None)
    with pytest.raises(DataError, match="cannot tell how to read more.csv"):
        read_sentences(tmp_path / "more.csv", transfer_format="auto", word_pattern=None)
    with pytest.raises(ConfigError, match="not a regular expression"):
        file_keys("lines", "(unclosed")
    with pytest.raises(ConfigError, match="--transfer_format='words'"):
        file_keys("words", None)
    with pytest.raises(ConfigError, match="augmented transfer set"):
        check_sources(["unused_train", "augmented"], 0)


def test_transfer_sentences_drop_dev_duplicates_and_are_capped(tmp_path):
    from distill.ner_data import NerDataset, NerSpec
    from distill.ner_transfer import read_ner_transfer

    dev = split_of([["Carol", "flew", "to", "Rome"]], [["B-per", "O", "O", "B-loc"]])
    data = NerDataset(train=dev, dev=dev, tag_map=None, tag_scheme="iob2", files=[])
    path = tmp_path / "more.txt"
    path.write_text("carol  FLEW to rome\n" + "".join(f"sentence number {i}\n" for i in range(10)), encoding="utf-8")
    source = {"kind": "file", "path": str(path), "format": "auto", "word_pattern": None, "max_rows": None, "seed": 0}
    spec = NerSpec(path=str(tmp_path))
    split, counts = read_ner_transfer(source, dataset=data, spec=spec)
    assert counts == {"read": 11, "skipped_empty": 0, "dropped_dev": 1, "rows": 10}  # case and spacing folded
    capped, counts = read_ner_transfer({**source, "max_rows": 4}, dataset=data, spec=spec)
    assert counts["rows"] == 4 and len(capped) == 4 and all(s in split.sentences for s in capped.sentences)
    assert read_ner_transfer({**source, "max_rows": 4}, dataset=data, spec=spec)[0].sentences == capped.sentences


def test_transfer_rows_carry_no_tags_and_find_their_teacher_rows(minilm_tokenizer):
    from types import SimpleNamespace

    from distill.cache import TeacherLogits, joint_offsets
    from distill.ner_data import NerDataset
    from students.config import StudentConfig
    from students.ner import pseudo_label, training_rows

    train = split_of([["a", "b"], ["c"], ["d", "e", "f"]], [["O", "B-loc"], ["B-per"], ["O", "O", "I-per"]])
    data = NerDataset(train=train, dev=train, tag_map=None, tag_scheme="iob2", files=[])
    more = {"more": split_of([["x", "y"], ["z"]]), "other": split_of([["u", "v", "w"]])}
    rows = training_rows(StudentConfig(), SimpleNamespace(data=SimpleNamespace(seed=0)), data, np.array([0, 2]), more)
    assert rows.labelled == 2 and rows.split.tags[2:] == [None, None, None] and rows.transfer == {"more": 2, "other": 1}
    assert rows.teacher_sentence.tolist() == [0, 2, 3, 4, 5]  # train 0..2, then more 3..4, then other 5
    offsets = joint_offsets([np.array([0, 2, 3, 6]), np.array([0, 2, 3]), np.array([0, 3])])
    assert offsets.tolist() == [0, 2, 3, 6, 8, 9, 12]
    aligned = align_words(minilm_tokenizer, rows.split, TAGS, 64)
    assert aligned.word_labels.tolist() == [0, 1, 0, 0, 4] + [NO_LABEL] * 6  # transfer words: KD only
    logits = TeacherLogits([np.eye(5, dtype=np.float32)[[0] * 6], np.eye(5, dtype=np.float32)[[3, 4, 1]],
                            np.eye(5, dtype=np.float32)[[2, 2, 2]]])
    assert pseudo_label(aligned, rows, logits, offsets) == 6
    assert aligned.word_labels[5:].tolist() == [3, 4, 1, 2, 2, 2]  # the teacher's argmax of each word
    capped = training_rows(StudentConfig(transfer_rows=2), SimpleNamespace(data=SimpleNamespace(seed=0)), data,
                           np.array([0, 2]), more)
    assert len(capped.split) == 4 and sum(capped.transfer.values()) == 2


@pytest.fixture(scope="module")
def ner_transfer_run(tmp_path_factory, ner_data, tiny_bert_dir) -> Path:
    """A teacher on 40 of the 64 training sentences (the other 24: unused_train) plus a text file of
    sentences, two of them dev sentences."""
    from teachers.finetune import main as teacher_main

    run = tmp_path_factory.mktemp("ner_transfer_run")
    dev = [[w for w, _ in s] for s in ner_sentences(16, 1)]
    more = run / "more.txt"
    more.write_text("\n".join(" ".join(s) for s in [dev[0], *[[w for w, _ in s] for s in ner_sentences(30, 7)],
                                                   [w.upper() for w in dev[1]]]) + "\n", encoding="utf-8")
    assert teacher_main(["--task=ner", "--data", str(ner_data), "--run-dir", str(run), f"--base_model={tiny_bert_dir}",
                         "--max_train_rows=40", f"--transfer=unused_train,{more}", *TEACHER_ARGS]) == 0
    return run


def test_teacher_scores_transfer_sentences_per_word(ner_transfer_run):
    info = json.loads((ner_transfer_run / "teacher" / "distill.json").read_text())
    assert set(info["transfer"]) == {"unused_train", "more"}
    unused, more = info["transfer"]["unused_train"]["counts"], info["transfer"]["more"]["counts"]
    assert unused["read"] == 24 and more["read"] == 32  # the generator repeats sentences: some are dev's too
    for counts in (unused, more):
        assert counts["dropped_dev"] == counts["read"] - counts["rows"] and counts["rows"] > 0
    assert more["dropped_dev"] >= 2  # the dev sentence written as it is, and the one in capitals
    for name, rows in (("unused_train", unused["rows"]), ("more", more["rows"])):
        cache = open_logit_cache(ner_transfer_run / "teacher" / "logits", name, expected_parts=None)
        assert len(cache.offsets) == rows + 1 and cache.logits.shape == (int(cache.offsets[-1]), 5)
    metrics = json.loads((ner_transfer_run / "teacher" / "metrics.json").read_text())
    assert set(metrics["cache"]) == {"train", "unused_train", "more"} and metrics["transfer"]["more"] == more


def test_students_read_transfer_sets_as_kd_only_or_pseudo_labelled_rows(ner_transfer_run, tmp_path):
    from students.distill import main as distill_main

    teacher = f"--teacher_dir={ner_transfer_run / 'teacher'}"
    sets = json.loads((ner_transfer_run / "teacher" / "distill.json").read_text())["transfer"]
    more, unused = sets["more"]["counts"], sets["unused_train"]["counts"]
    assert distill_main(["--run-dir", str(tmp_path / "kd"), teacher, *STUDENT_ARGS]) == 0
    kd = json.loads((tmp_path / "kd" / "student" / "metrics.json").read_text())
    assert kd["labelled_rows"] == 40 and kd["transfer_rows"] == unused["rows"] + more["rows"]
    assert kd["transfer_used"] == {"unused_train": unused["rows"], "more": more["rows"]}
    assert kd["words_without_teacher_logits"] == 0
    control = json.loads((tmp_path / "kd" / "student_ce" / "metrics.json").read_text())
    assert control["transfer_rows"] == 0 and control["train_rows"] == 40 and "kd" not in control["history"][0]
    assert kd["steps_done"] > control["steps_done"]  # the same epochs over more sentences
    from distill.report import schedule_line

    assert schedule_line("KD student", kd).startswith(f"- KD student: 40 labelled + {kd['transfer_rows']} transfer "
                                                      "(more, unused_train) sentences, 2 epochs")
    assert schedule_line("CE-only student", control).startswith("- CE-only student: 40 labelled sentences, 2 epochs")
    assert distill_main(["--run-dir", str(tmp_path / "pseudo"), teacher, *STUDENT_ARGS, "--student_ce=false",
                         "--pseudo_labels=true", "--w_kd=0", "--w_ce=1", "--transfer=more"]) == 0
    pseudo = json.loads((tmp_path / "pseudo" / "student" / "metrics.json").read_text())
    assert pseudo["transfer_rows"] == more["rows"] and pseudo["pseudo_labelled_words"] > 0
    assert "kd" not in pseudo["history"][0]
    with pytest.raises(ConfigError, match="--transfer=nope: the teacher scored no transfer set"):
        distill_main(["--run-dir", str(tmp_path / "x"), teacher, *STUDENT_ARGS, "--transfer=nope"])


def test_score_adds_a_transfer_set_to_a_finished_ner_teacher(ner_transfer_run, tmp_path):
    import shutil

    from teachers.score import main as score_main

    run = tmp_path / "run"
    shutil.copytree(ner_transfer_run / "teacher", run / "teacher")
    extra = tmp_path / "extra.conll"
    extra.write_text("Alice\tO\nflew\tO\n\nto\nRome\n", encoding="utf-8")
    assert score_main(["--run-dir", str(run), f"--transfer={extra}"]) == 0
    info = json.loads((run / "teacher" / "distill.json").read_text())
    assert set(info["transfer"]) == {"unused_train", "more", "extra"}  # the earlier sets stay
    cache = open_logit_cache(run / "teacher" / "logits", "extra", expected_parts=None)
    assert cache.offsets.tolist() == [0, 2, 4]


def test_ner_presets_give_the_kd_student_its_controls_passes(ner_run):
    from students.config import NER_PRESETS, PRESETS
    from students.distill import parse_args as student_args
    from teachers.finetune import NER_PRESETS as TEACHER_NER
    from teachers.finetune import PRESETS as TEACHER
    from teachers.finetune import parse_args as teacher_args

    for name, preset in NER_PRESETS.items():
        assert preset.epochs >= (preset.ce_epochs or preset.epochs) and preset.patience == 0
        assert 0 < preset.holdout_rows < PRESETS[name].holdout_rows  # fewer, shorter examples than classification's
        assert TEACHER_NER[name].holdout_rows == preset.holdout_rows and TEACHER_NER[name].task == "ner"
        assert TEACHER[name].holdout_rows == PRESETS[name].holdout_rows  # classification: teacher and students alike
    cfg, _ = teacher_args(["--task=ner", "--data", "x", "--epochs=3"])
    assert (cfg.epochs, cfg.holdout_rows, cfg.transfer) == (3, 200, ["unused_train", "unlabeled"])
    cfg, _ = student_args(["--run-dir", str(ner_run), "--seed=2"])  # the teacher is a tagger: the NER preset
    assert (cfg.epochs, cfg.ce_epochs, cfg.patience, cfg.holdout_rows, cfg.seed) == (8, 8, 0, 200, 2)
    report = (ner_run / "report.md").read_text()
    assert "Schedules" in report and "- KD student: 64 labelled sentences, 2 epochs" in report


def test_compare_arms_for_a_tagger(ner_run, ner_transfer_run):
    from distill.artifacts import read_model_info
    from experiments.compare import CompareConfig, arm_args, summarise, task_arms
    from students.stage import ControlSchedule

    plain, with_sets = read_model_info(ner_run / "teacher"), read_model_info(ner_transfer_run / "teacher")
    assert task_arms(CompareConfig().arms, plain, given=False) == ["ce", "kd"]  # no transfer set: no pseudo arm
    assert task_arms(CompareConfig().arms, with_sets, given=False) == ["ce", "pseudo", "kd"]
    with pytest.raises(ConfigError, match=r"unknown arm\(s\) \['kd_layers'\] for a ner teacher"):
        task_arms(["ce", "kd_layers"], plain, given=True)
    ce = arm_args("ce", 1, CompareConfig(), teacher_dir=Path("t"), run_dir=Path("r"), extra=[])
    assert not [a for a in ce if a.startswith("--epochs=")] and "--patience=0" in ce  # the preset's epochs
    assert "--epochs=9" in arm_args("ce", 1, CompareConfig(), teacher_dir=Path("t"), run_dir=Path("r"), extra=[],
                                    schedule=ControlSchedule(9, None, "--ce_epochs=9"))
    results = {arm: {s: {"f1": f, "steps_done": 1, "samples_seen": 1, "train_rows": 1, "train_time_s": 1.0}
                     for s, f in enumerate(fs)} for arm, fs in {"ce": [0.40, 0.42], "kd": [0.45, 0.46]}.items()}
    summary = summarise(results, ["ce", "kd"], 2, "f1")
    assert summary["paired"]["kd - ce"]["mean"] == pytest.approx(0.045)


@pytest.mark.slow
def test_compare_end_to_end_on_a_tiny_tagger(ner_transfer_run, tmp_path):
    import shutil

    from experiments.compare import main as compare

    shutil.copytree(ner_transfer_run / "teacher", tmp_path / "teacher")
    args = ["--run-dir", str(tmp_path), "--seeds=2", "--holdout_rows=8", "--max_length=32", "--batch_size=16",
            "--epochs=1", "--lr=3e-3", "--threads=1", "--evals_per_epoch=1"]
    assert compare(args) == 0
    report = json.loads((tmp_path / "compare" / "compare.json").read_text())
    assert report["task"] == "ner" and report["score"] == "f1" and set(report["arms"]) == {"ce", "pseudo", "kd"}
    assert set(report["paired"]) == {"pseudo - ce", "kd - ce", "kd - pseudo"}
    assert report["arms"]["ce"]["train_rows"] == {"0": 32, "1": 32}  # 40 labelled - 8 held back
    assert "dev entity F1" in (tmp_path / "compare" / "compare.md").read_text()


@pytest.fixture(scope="module")
def tiny_mpnet_dir(tmp_path_factory, minilm_path) -> Path:
    """A random-initialised 2-layer MPNet (the mpnet teacher's architecture) with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_mpnet")
    MPNetModel(MPNetConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=130, pad_token_id=0)).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return out


def test_an_mpnet_tagger_teaches_a_student_of_another_family_and_tokenizer(tiny_mpnet_dir, char_model_dir,
                                                                          ner_data, tmp_path):
    """The mpnet teacher's path with --task=ner (MPNetForTokenClassification, its per-word caches of
    the training and transfer sentences), read by a BERT student with a character tokenizer."""
    from students.distill import main as distill_main
    from teachers.finetune import main as teacher_main

    assert teacher_main(["--task=ner", "--data", str(ner_data), "--run-dir", str(tmp_path),
                         f"--base_model={tiny_mpnet_dir}", "--max_train_rows=40", *TEACHER_ARGS]) == 0
    config = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert config["architectures"] == ["MPNetForTokenClassification"]
    unused = json.loads((tmp_path / "teacher" / "distill.json").read_text())["transfer"]["unused_train"]["counts"]
    assert distill_main(["--run-dir", str(tmp_path), "--student=pretrained", f"--pretrained={char_model_dir}",
                         *STUDENT_ARGS, "--max_length=96", "--student_ce=false"]) == 0
    m = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert m["transfer_rows"] == unused["rows"] > 0 and m["words_without_teacher_logits"] == 0
    assert np.isfinite(m["history"][-1]["kd"]) and m["student"]["pretrained"] == str(char_model_dir)
