"""Trimming the word-embedding table and the tokenizer to the tokens some text uses: seen text
tokenises to the same pieces and the same logits, unseen words are re-segmented or become one
[UNK], specials stay, the result saves and reloads, and the student stage's --trim_vocab."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data import DataSpec, load_dataset
from distill.errors import PipelineError
from distill.trim_vocab import VocabTrimError, trim_vocabulary, unk_effect, used_token_ids

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def texts(sst2_small) -> list[str]:
    return load_dataset(DataSpec(path=str(sst2_small))).train.texts  # 256 rows


def classifier(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)  # the classification head is new: the same one for every call
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2).eval()


def logits(model, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits  # (B, C)


def test_used_token_ids_are_sorted_unique_and_include_specials(tokenizer, texts):
    keep = used_token_ids(tokenizer, texts, chunk_rows=100)
    assert keep.dtype == np.int64 and np.all(np.diff(keep) > 0)
    assert set(tokenizer.all_special_ids) <= set(keep.tolist())
    every = {i for ids in tokenizer(texts)["input_ids"] for i in ids}
    assert set(keep.tolist()) == every | set(tokenizer.all_special_ids)
    cut = used_token_ids(tokenizer, texts, max_length=8)
    assert set(cut.tolist()) < set(keep.tolist())  # truncation keeps fewer


def test_seen_text_tokenises_and_scores_as_before(tokenizer, texts, tiny_bert_dir, tmp_path):
    model = classifier(tiny_bert_dir)
    before = logits(model, tokenizer, texts[:64])
    keep = used_token_ids(tokenizer, texts)
    model, trimmed = trim_vocabulary(model, tokenizer, keep, tmp_path / "tok")
    assert len(trimmed) == len(keep) < len(tokenizer) // 3
    assert model.get_input_embeddings().weight.shape == (len(keep), 32)
    assert model.config.vocab_size == len(keep)
    for text in texts:
        old, new = tokenizer(text)["input_ids"], trimmed(text)["input_ids"]
        assert tokenizer.convert_ids_to_tokens(old) == trimmed.convert_ids_to_tokens(new)
        assert new == np.searchsorted(keep, old).tolist()  # old id keep[n] -> n
    torch.testing.assert_close(logits(model, trimmed, texts[:64]), before, atol=1e-6, rtol=0)
    assert unk_effect(tokenizer, trimmed, texts)["dev_resegmented_row_share"] == 0.0


def test_specials_keep_sensible_ids(tokenizer, texts, tiny_bert_dir, tmp_path):
    model, trimmed = trim_vocabulary(classifier(tiny_bert_dir), tokenizer, used_token_ids(tokenizer, texts),
                                     tmp_path)
    assert trimmed.convert_ids_to_tokens(list(range(5))) == list(SPECIALS)  # [PAD] 0, the rest in order
    assert trimmed.pad_token_id == 0 and trimmed.unk_token_id == 1 and trimmed.cls_token_id == 2
    assert trimmed("a [MASK] b")["input_ids"] == [2, trimmed.convert_tokens_to_ids("a"), 4,
                                                  trimmed.convert_tokens_to_ids("b"), 3]
    assert model.config.pad_token_id == 0 and model.get_input_embeddings().padding_idx == 0


def test_unseen_words_are_resegmented_or_one_unk(tokenizer, tiny_bert_dir, tmp_path):
    pieces = ["the", "je", "##op", "##ard", "##y"]
    keep = sorted(tokenizer.all_special_ids + tokenizer.convert_tokens_to_ids(pieces))
    _, trimmed = trim_vocabulary(classifier(tiny_bert_dir), tokenizer, keep, tmp_path)
    assert tokenizer.tokenize("jeopardy") == ["jeopardy"]  # one token before
    assert trimmed.tokenize("jeopardy") == ["je", "##op", "##ard", "##y"]  # the kept pieces it still matches
    assert trimmed.tokenize("they") == ["the", "##y"]
    assert trimmed.tokenize("qatar") == ["[UNK]"]  # no kept piece starts the word
    assert trimmed.tokenize("thex") == ["[UNK]"]  # "the" matches, "##x" does not: the whole word, not "the" + [UNK]
    assert trimmed.tokenize("the qatar the") == ["the", "[UNK]", "the"]  # one [UNK] per unseen word
    effect = unk_effect(tokenizer, trimmed, ["the qatar", "the", "jeopardy"])
    assert effect["dev_new_unk_tokens"] == 1 and effect["dev_tokens"] == 4
    assert effect["dev_unk_row_share"] == pytest.approx(1 / 3)
    assert effect["dev_resegmented_row_share"] == pytest.approx(2 / 3)


def test_save_and_reload_give_the_same_logits(tokenizer, texts, tiny_bert_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, trimmed = trim_vocabulary(classifier(tiny_bert_dir), tokenizer, used_token_ids(tokenizer, texts),
                                     tmp_path / "tok")
    model.save_pretrained(tmp_path / "model")
    trimmed.save_pretrained(tmp_path / "model")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert type(reloaded).__name__ == "BertTokenizerFast" and reloaded.get_vocab() == trimmed.get_vocab()
    assert json.loads((tmp_path / "model" / "config.json").read_text())["vocab_size"] == len(trimmed)
    torch.testing.assert_close(logits(loaded, reloaded, texts[:32]), logits(model, trimmed, texts[:32]),
                               atol=1e-6, rtol=0)


def test_tied_output_embeddings_are_gathered(tokenizer, texts, tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    model = BertForMaskedLM(config).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()  # a bias that is not all zeros, so its gather is checked
    before = logits(model, tokenizer, texts[:8])  # (B, L, V)
    keep = used_token_ids(tokenizer, texts)
    model, trimmed = trim_vocabulary(model, tokenizer, keep, tmp_path)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.cls.predictions.bias.shape == (len(keep),)
    torch.testing.assert_close(logits(model, trimmed, texts[:8]), before[..., torch.as_tensor(keep)],
                               atol=1e-6, rtol=0)


def test_refusals(tokenizer, minilm_path, tiny_bert_dir, tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import BertTokenizer, PreTrainedTokenizerFast

    keep = sorted(tokenizer.all_special_ids + tokenizer.convert_tokens_to_ids(["the"]))
    without_mask = [i for i in keep if i != tokenizer.mask_token_id]
    with pytest.raises(VocabTrimError, match=r"\[MASK\]") as error:
        trim_vocabulary(classifier(tiny_bert_dir), tokenizer, without_mask, tmp_path / "a")
    assert isinstance(error.value, PipelineError)
    with pytest.raises(VocabTrimError, match="not a fast tokenizer"):
        trim_vocabulary(classifier(tiny_bert_dir), BertTokenizer.from_pretrained(minilm_path), keep, tmp_path / "b")
    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[])))
    with pytest.raises(VocabTrimError, match="BPE tokenizer"):
        trim_vocabulary(classifier(tiny_bert_dir), bpe, [0, 1], tmp_path / "c")


# -- the student stage with --trim_vocab=true, on the tiny teacher (the pattern of test_pipeline.py)

@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, sst2_small, tiny_bert_dir) -> Path:
    from teachers.finetune import TeacherConfig
    from teachers.finetune import run as run_teacher

    run_dir = tmp_path_factory.mktemp("run")
    run_teacher(TeacherConfig(data=str(sst2_small), base_model=str(tiny_bert_dir), max_length=32, epochs=1,
                              batch_size=16, lr=1e-3, evals_per_epoch=1, patience=0, eval_batch_size=64,
                              transfer=["unlabeled"], progress=False), run_dir)
    return run_dir


def test_student_stage_trims_the_vocabulary(teacher_run):
    from transformers import AutoConfig, AutoTokenizer

    from students import distill as student_stage

    assert student_stage.main(["--run-dir", str(teacher_run), "--max_length=32", "--epochs=1", "--batch_size=16",
                               "--lr=1e-3", "--eval_batch_size=64", "--evals_per_epoch=1", "--patience=0", "--holdout_rows=0",
                               "--progress=false", "--student_ce=false", "--trim_vocab=true"]) == 0
    out = teacher_run / "student"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["vocab_before"] == 30522 and metrics["vocab_after"] < metrics["vocab_before"]
    assert metrics["parameters_after"] < metrics["parameters_before"]
    assert 0 < metrics["dev_unk_token_share"] < 1 and 0 < metrics["dev_unk_row_share"] <= 1
    assert metrics["dev_resegmented_row_share"] >= metrics["dev_unk_row_share"]
    assert len(AutoTokenizer.from_pretrained(out)) == metrics["vocab_after"]
    assert AutoConfig.from_pretrained(out).vocab_size == metrics["vocab_after"]
    assert json.loads((out / "train_config.json").read_text())["trim_vocab"] is True
