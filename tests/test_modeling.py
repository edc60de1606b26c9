"""distill.modeling (fine-tuning strategies, LoRA merge, model names) and students.build (the
three student kinds), on a tiny random 4-layer BERT classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data import Split
from distill.modeling import (
    apply_strategy,
    count_parameters,
    encoder_layers,
    load_classifier,
    merge_for_saving,
    resolve_model_name,
)
from distill.tokens import encode
from distill.trainer import make_optimizer
from students.build import build_student, evenly_spaced_layers, fresh_model, layer_subset
from students.config import StudentConfig

ID2LABEL = {0: "neg", 1: "pos"}
TEXTS = ["a gripping , well acted film", "dull and far too long", "i laughed , i cried",
         "not worth the ticket", "the best thing this year", "an utter mess"]


def classifier(source: Path, seed: int = 0):
    torch.manual_seed(seed)
    return load_classifier(str(source), id2label=ID2LABEL)


@pytest.fixture(scope="module")
def batch(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    split = Split(texts=TEXTS, labels=None, source="inline")
    encoded = encode(tokenizer, split, np.array([1, 0, 1, 0, 1, 0]), 16)
    return encoded.batch(np.arange(len(TEXTS)), torch.device("cpu")), torch.as_tensor(encoded.labels)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    """A saved classifier (head included) from the tiny BERT, as the teacher stage leaves it."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("teacher")
    model = classifier(tiny_bert_dir, seed=1)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    return out


def trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def layer_state(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------- strategies


def test_classifier_layout(tiny_bert_dir):
    model = classifier(tiny_bert_dir)
    assert len(encoder_layers(model)) == 4
    assert model.config.num_labels == 2 and model.config.id2label == ID2LABEL
    assert model.config.label2id == {"neg": 0, "pos": 1}


@pytest.mark.parametrize(("strategy", "top_n", "prefixes"), [
    ("top-n", 1, ("bert.encoder.layer.3.", "bert.pooler.", "classifier.")),
    ("top-n", 2, ("bert.encoder.layer.2.", "bert.encoder.layer.3.", "bert.pooler.", "classifier.")),
    ("top-n", 4, ("bert.encoder.layer.", "bert.pooler.", "classifier.")),
    ("frozen", 2, ("bert.pooler.", "classifier.")),
])
def test_partial_strategies(tiny_bert_dir, strategy, top_n, prefixes):
    model = classifier(tiny_bert_dir)
    names = {n for n, _ in model.named_parameters()}
    out = apply_strategy(model, strategy=strategy, top_n=top_n)
    assert out is model
    expected = {n for n in names if n.startswith(prefixes)}
    assert trainable(model) == expected
    assert "classifier.weight" in expected and "bert.pooler.dense.weight" in expected
    assert not any(n.startswith("bert.embeddings.") for n in trainable(model))
    counts = count_parameters(model)
    assert counts["trainable_parameters"] == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    assert counts["parameters"] == sum(p.numel() for p in model.parameters())


def test_full_strategy_unfreezes_everything(tiny_bert_dir):
    model = classifier(tiny_bert_dir)
    apply_strategy(model, strategy="frozen")
    apply_strategy(model, strategy="full")
    assert trainable(model) == {n for n, _ in model.named_parameters()}


def test_lora_strategy(tiny_bert_dir):
    model = classifier(tiny_bert_dir)
    lora = apply_strategy(model, strategy="lora", lora_r=4, lora_alpha=8)
    names = trainable(lora)
    adapters = {n for n in names if ".lora_" in n}
    # A and B on query and value of each of the 4 layers
    assert len(adapters) == 4 * 2 * 2
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in adapters} == {"query", "value"}
    head = names - adapters
    assert head and all("classifier.modules_to_save" in n for n in head)
    frozen = {n for n, _ in lora.named_parameters()} - names
    assert any("query.base_layer.weight" in n for n in frozen)
    assert any("word_embeddings" in n for n in frozen)
    assert all(".lora_" not in n and "modules_to_save" not in n for n in frozen)
    a = next(p for n, p in lora.named_parameters() if "layer.0.attention.self.query.lora_A" in n)
    assert a.shape == (4, 32)


def test_bad_strategy_and_top_n(tiny_bert_dir):
    model = classifier(tiny_bert_dir)
    with pytest.raises(ValueError, match="unknown strategy 'partial'"):
        apply_strategy(model, strategy="partial")
    for top_n in (0, 5, -1):
        with pytest.raises(ValueError, match=rf"top_n={top_n} but the model has 4 encoder layers"):
            apply_strategy(model, strategy="top-n", top_n=top_n)


def test_merge_for_saving_lora(tiny_bert_dir, batch, tmp_path):
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    inputs, _ = batch
    model = classifier(tiny_bert_dir).eval()
    with torch.no_grad():
        base_logits = model(**inputs).logits.clone()
    lora = apply_strategy(model, strategy="lora", lora_r=4, lora_alpha=8)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)  # B starts at zero: make the adapter do something
            if "classifier.modules_to_save" in name:
                p.add_(0.25)  # the trained head copy differs from the original head
    lora.eval()
    with torch.no_grad():
        lora_logits = lora(**inputs).logits.clone()
    assert not torch.allclose(lora_logits, base_logits, atol=1e-3)

    merged = merge_for_saving(lora)
    assert type(merged) is BertForSequenceClassification
    assert not any("lora" in n or "modules_to_save" in n or "base_layer" in n for n, _ in merged.named_parameters())
    merged.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, lora_logits, atol=1e-5, rtol=1e-5)

    merged.save_pretrained(tmp_path / "merged", safe_serialization=True)
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**inputs).logits, lora_logits, atol=1e-5, rtol=1e-5)


def test_merge_for_saving_plain_model_is_itself(tiny_bert_dir):
    model = classifier(tiny_bert_dir)
    assert merge_for_saving(model) is model


@pytest.mark.parametrize(("strategy", "top_n"), [("full", 2), ("top-n", 1), ("frozen", 2), ("lora", 2)])
def test_train_step_changes_only_trainable_parameters(tiny_bert_dir, batch, strategy, top_n):
    inputs, labels = batch
    model = apply_strategy(classifier(tiny_bert_dir), strategy=strategy, top_n=top_n, lora_dropout=0.0)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.01)
    loss = torch.nn.functional.cross_entropy(model(**inputs).logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == trainable(model)
    assert any("classifier" in n for n in changed)
    if strategy == "lora":
        assert all(".lora_" in n or "modules_to_save" in n for n in changed)


# ----------------------------------------------------------------------------- model names


def test_resolve_model_name(tmp_path, monkeypatch):
    packaged = Path(resolve_model_name("packaged"))
    assert packaged.is_dir() and (packaged / "config.json").is_file()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        resolve_model_name("./x")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        resolve_model_name(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        resolve_model_name(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        resolve_model_name("empty")  # an existing relative folder is a folder, not a hub name
    (tmp_path / "empty" / "config.json").write_text("{}")
    assert resolve_model_name("empty") == "empty"
    monkeypatch.setenv("DISTILL_ALLOW_HUB", "1")  # hub names pass through only when asked (tests/test_safe_paths.py)
    assert resolve_model_name("some-org/some-model") == "some-org/some-model"


# ----------------------------------------------------------------------------- students


@pytest.mark.parametrize(("total", "keep", "expected"), [
    (6, 3, [0, 2, 5]), (6, 1, [5]), (4, 4, [0, 1, 2, 3]), (6, 2, [0, 5]), (12, 6, [0, 2, 4, 7, 9, 11]),
    (1, 1, [0]),
])
def test_evenly_spaced_layers(total, keep, expected):
    assert evenly_spaced_layers(total, keep) == expected


def test_evenly_spaced_layers_properties():
    for total in range(1, 33):
        for keep in range(2, total + 1):
            ids = evenly_spaced_layers(total, keep)
            assert len(ids) == keep, (total, keep)
            assert ids[0] == 0 and ids[-1] == total - 1
            assert all(a < b for a, b in zip(ids, ids[1:], strict=False))


@pytest.mark.parametrize(("total", "keep"), [(6, 0), (6, 7), (6, -1), (0, 0), (0, 1)])
def test_evenly_spaced_layers_invalid(total, keep):
    with pytest.raises(ValueError, match=f"cannot keep {keep} of {total} layers"):
        evenly_spaced_layers(total, keep)


def _check_subset(model, teacher, kept):
    layers, source = encoder_layers(model), encoder_layers(teacher)
    assert len(layers) == len(kept)
    for j, i in enumerate(kept):
        assert_same_state(layer_state(layers[j]), layer_state(source[i]))
    assert_same_state(layer_state(model.bert.embeddings), layer_state(teacher.bert.embeddings))
    assert_same_state(layer_state(model.bert.pooler), layer_state(teacher.bert.pooler))
    assert_same_state(layer_state(model.classifier), layer_state(teacher.classifier))
    assert model.config.num_hidden_layers == len(kept)
    # the model's own list was emptied in place: the encoder really runs the kept blocks
    assert model.bert.encoder.layer is layers


def test_layer_subset_evenly_spaced_saves_and_reloads(teacher_dir, batch, tmp_path):
    from transformers import AutoModelForSequenceClassification

    inputs, _ = batch
    teacher = classifier(teacher_dir)
    model, kept, total = layer_subset(teacher_dir, keep=2, layer_ids=None, id2label=ID2LABEL, dropout=None)
    assert (kept, total) == ([0, 3], 4)
    _check_subset(model, teacher, kept)
    # the student differs from the teacher (2 of 4 layers), so the check above is not vacuous
    teacher.eval()
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits
        assert not torch.allclose(logits, teacher(**inputs).logits)

    model.save_pretrained(tmp_path / "student", safe_serialization=True)
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student",
                                                                       output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert reloaded.config.num_hidden_layers == 2 and len(encoder_layers(reloaded)) == 2
    assert reloaded.config.id2label == ID2LABEL
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(**inputs).logits, logits)


def test_layer_subset_explicit_ids(teacher_dir):
    teacher = classifier(teacher_dir)
    model, kept, total = layer_subset(teacher_dir, keep=3, layer_ids=[1, 2], id2label=ID2LABEL, dropout=0.0)
    assert (kept, total) == ([1, 2], 4)
    _check_subset(model, teacher, kept)
    assert model.config.hidden_dropout_prob == 0.0 and model.config.attention_probs_dropout_prob == 0.0


@pytest.mark.parametrize(("keep", "layer_ids", "match"), [
    (2, [0, 4], "must be distinct increasing indices in"),
    (2, [-1, 2], "must be distinct increasing indices in"),
    (2, [1, 1], "must be distinct increasing indices in"),
    (5, None, "cannot keep 5 of 4 layers"),
    (0, None, "cannot keep 0 of 4 layers"),
])
def test_layer_subset_invalid(teacher_dir, keep, layer_ids, match):
    with pytest.raises(ValueError, match=match):
        layer_subset(teacher_dir, keep=keep, layer_ids=layer_ids, id2label=ID2LABEL, dropout=None)


def test_fresh_model_sizes(teacher_dir, batch):
    id2label = {0: "a", 1: "b", 2: "c"}
    model = fresh_model(teacher_dir, layers=2, hidden=16, heads=4, id2label=id2label, dropout=0.2)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 16, 4)
    assert config.intermediate_size == 64 and config.hidden_dropout_prob == 0.2
    assert len(encoder_layers(model)) == 2
    assert model.bert.embeddings.word_embeddings.weight.shape == (30522, 16)
    assert model.bert.encoder.layer[0].intermediate.dense.weight.shape == (64, 16)
    assert model.classifier.weight.shape == (3, 16)
    assert config.id2label == id2label and config.label2id == {"a": 0, "b": 1, "c": 2}
    inputs, _ = batch
    with torch.no_grad():
        assert model.eval()(**inputs).logits.shape == (len(TEXTS), 3)
    with pytest.raises(ValueError, match="hidden=18 is not divisible by heads=4"):
        fresh_model(teacher_dir, layers=2, hidden=18, heads=4, id2label=id2label, dropout=None)


def _build(kind, teacher_dir, pretrained, **kw):
    cfg = StudentConfig(student=kind, keep_layers=2, pretrained=pretrained, fresh_layers=1, fresh_hidden=16,
                        fresh_heads=2, **kw)
    return build_student(cfg, teacher_dir=teacher_dir, id2label=ID2LABEL)


def test_build_student_kinds(teacher_dir, tiny_bert_dir, batch):
    inputs, _ = batch
    model, tokenizer_source, info = _build("pretrained", teacher_dir, str(tiny_bert_dir), dropout=0.05)
    assert tokenizer_source == str(tiny_bert_dir)
    assert info == {"kind": "pretrained", "pretrained": str(tiny_bert_dir)}
    assert model.config.num_labels == 2 and model.config.id2label == ID2LABEL
    assert model.config.hidden_dropout_prob == 0.05
    assert len(encoder_layers(model)) == 4
    with torch.no_grad():
        assert model.eval()(**inputs).logits.shape == (len(TEXTS), 2)

    model, tokenizer_source, info = _build("subset", teacher_dir, "unused", layer_ids=[0, 2])
    assert tokenizer_source == str(teacher_dir)
    assert info == {"kind": "subset", "layers_kept": [0, 2], "teacher_layers": 4}

    model, tokenizer_source, info = _build("fresh", teacher_dir, "unused")
    assert tokenizer_source == str(teacher_dir)
    assert info == {"kind": "fresh", "layers": 1, "hidden": 16, "heads": 2}
    assert len(encoder_layers(model)) == 1

    with pytest.raises(ValueError, match="unknown student kind 'tiny'"):
        _build("tiny", teacher_dir, "unused")
    with pytest.raises(ValueError, match=r"--pretrained_layers=5: .* has 4 layers"):
        _build("pretrained", teacher_dir, str(tiny_bert_dir), pretrained_layers=5)
    with pytest.raises(FileNotFoundError):
        _build("pretrained", teacher_dir, "./no-such-model")


def test_pretrained_student_keeps_some_of_its_own_layers(teacher_dir, tiny_bert_dir, batch):
    """A 2-layer student cut from another pretrained model (not the teacher): its own first two
    layers, under their own key, so the layer losses never read them as teacher layers."""
    inputs, _ = batch
    from transformers import AutoModel

    source = AutoModel.from_pretrained(tiny_bert_dir)
    model, tokenizer_source, info = _build("pretrained", teacher_dir, str(tiny_bert_dir), pretrained_layers=2)
    assert tokenizer_source == str(tiny_bert_dir)
    assert info == {"kind": "pretrained", "pretrained": str(tiny_bert_dir), "own_layers_kept": [0, 1],
                    "own_layers": 4}
    layers = encoder_layers(model)
    assert len(layers) == 2 and model.config.num_hidden_layers == 2
    for j, i in enumerate([0, 1]):
        assert_same_state(layer_state(layers[j]), layer_state(source.encoder.layer[i]))
    assert_same_state(layer_state(model.bert.embeddings), layer_state(source.embeddings))
    with torch.no_grad():
        assert model.eval()(**inputs).logits.shape == (len(TEXTS), 2)


def test_mean_pooling_block_puts_the_mean_where_the_head_reads(tiny_bert_dir, tmp_path):
    from distill.modeling import append_mean_pooling_layer, load_classifier

    torch.manual_seed(0)
    model = load_classifier(str(tiny_bert_dir), id2label=ID2LABEL)
    ids = torch.randint(1000, 2000, (2, 7))
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    model.eval()
    with torch.no_grad():
        states = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
        mean = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, H): real tokens only
        append_mean_pooling_layer(model)
        for mode in ("eval", "train"):  # the block's own dropouts are off in both
            getattr(model, mode)()
            model.bert.embeddings.dropout.p = 0.0  # keep the layers below deterministic for the check
            for layer in encoder_layers(model)[:-1]:
                for m in layer.modules():
                    if isinstance(m, torch.nn.Dropout):
                        m.p = 0.0
                    if hasattr(m, "dropout_prob"):
                        m.dropout_prob = 0.0
            head_input = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
            want = torch.nn.functional.layer_norm(mean, (mean.shape[-1],), eps=model.config.layer_norm_eps)
            torch.testing.assert_close(head_input, want, atol=0.05, rtol=0)  # the h/1000 residual term
    assert model.config.num_hidden_layers == 5
    assert not any(p.requires_grad for p in encoder_layers(model)[-1].parameters())
    model.save_pretrained(tmp_path)  # a standard BERT classifier: reloads with its extra block
    reloaded = load_classifier(str(tmp_path), id2label=ID2LABEL).eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids, attention_mask=mask).logits,
                                   model(input_ids=ids, attention_mask=mask).logits)


def test_frozen_word_embeddings_stay_as_they_were_and_the_rest_trains(teacher_dir, tiny_bert_dir, batch):
    from distill.config import ConfigError
    from distill.trainer import make_optimizer

    inputs, _ = batch
    model, _, info = _build("pretrained", teacher_dir, str(tiny_bert_dir), pretrained_layers=2, freeze_embeddings=True)
    table = model.get_input_embeddings().weight
    assert info["word_embeddings"] == f"frozen ({table.numel():,} parameters)" and not table.requires_grad
    before, other = table.detach().clone(), model.bert.encoder.layer[0].output.dense.weight.detach().clone()
    optimizer = make_optimizer(model, lr=1e-2, weight_decay=0.01)
    model.train()(**inputs).logits.sum().backward()
    optimizer.step()
    assert torch.equal(table, before) and not torch.equal(model.bert.encoder.layer[0].output.dense.weight, other)
    with pytest.raises(ConfigError, match="a fresh student's word embeddings are random"):
        _build("fresh", teacher_dir, "unused", freeze_embeddings=True)
