"""distill.onnx_bert: a BertModel exported to ONNX here (TorchScript exporter, as the packaged
paraphrase-MiniLM-L3-v2 graph was) is mapped back by following the graph, equal tensor for
tensor; a graph with a perturbed or a missing initialiser is refused. Tiny and offline."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from distill import onnx_bert  # noqa: E402
from distill.errors import PipelineError  # noqa: E402

TINY = {"vocab_size": 60, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 24, "max_position_embeddings": 20, "type_vocab_size": 2}
PATH = Path("tiny.onnx")  # the name the messages give (the graph is only in memory)


def tiny_bert(attn: str = "eager"):
    """A tiny BertModel (no pooler) with every tensor random: BERT's init zeroes the biases, and
    the exporter would share equal tensors, which would leave nothing to tell the biases apart."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY, attn_implementation=attn), add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.1 if "LayerNorm" in name else 0.5) + (name.endswith("LayerNorm.weight")))
    return model


def export(model):
    """The ModelProto of ``model``'s TorchScript export, dynamic batch and length, as the package's."""
    ids = torch.randint(0, TINY["vocab_size"], (2, 7))
    buffer = io.BytesIO()
    torch.onnx.export(model, (ids, torch.ones_like(ids)), buffer, input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                      dynamic_axes={n: {0: "batch", 1: "length"} for n in ("input_ids", "attention_mask")})
    return onnx.load_from_string(buffer.getvalue())


def batches(seed: int = 1) -> list:
    """Two batches of random ids, the second padded (its mask has zeros)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, TINY["vocab_size"], (3, 9)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    return [(ids[:, :6].copy(), mask[:, :6].copy()), (ids, mask)]


@pytest.fixture(scope="module")
def exported():
    model = tiny_bert()
    return model, export(model)


def test_the_mapping_gives_back_every_tensor(exported):
    model, graph = exported
    state, config, hidden = onnx_bert.map_graph(graph, PATH)
    assert config == {**TINY, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0}
    original = model.state_dict()
    assert set(state) == set(original)
    for name, value in state.items():  # the (in, out) MatMul weights transposed back to (out, in)
        assert np.array_equal(value, original[name].numpy()), name
    assert hidden == "last_hidden_state"


def test_the_rebuilt_model_matches_the_graph(exported):
    _, graph = exported
    state, config, hidden = onnx_bert.map_graph(graph, PATH)
    bert = onnx_bert.build_bert(state, config, PATH)
    delta = onnx_bert.max_abs_difference(bert, onnx_bert.session_with_output(graph, hidden), hidden, batches())
    assert delta <= 1e-5


def test_the_sdpa_export_maps_too():
    """SDPA's export scales q and k by Mul(sqrt) instead of dividing the scores: the walk is the same."""
    model = tiny_bert("sdpa")
    state, _, _ = onnx_bert.map_graph(export(model), PATH)
    assert all(np.array_equal(v, model.state_dict()[k].numpy()) for k, v in state.items())


def test_a_mapping_mistake_is_refused(exported, tmp_path, monkeypatch):
    """q and k swapped in layer 0 (the classic slip): the proof on real batches refuses it."""
    _, graph = exported
    path = tmp_path / "tiny.onnx"
    onnx.save(graph, str(path))
    right = onnx_bert.map_graph

    def swapped(model, p):
        state, config, hidden = right(model, p)
        q, k = "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.key.weight"
        state[q], state[k] = state[k], state[q]
        return state, config, hidden

    monkeypatch.setattr(onnx_bert, "map_graph", swapped)
    with pytest.raises(onnx_bert.OnnxMappingError, match=r"tiny\.onnx: the rebuilt BertModel differs") as err:
        onnx_bert.rebuild(path, batches())
    assert isinstance(err.value, PipelineError) and "\n" not in str(err.value)


def test_a_graph_that_computes_something_else_is_refused(exported, tmp_path):
    """The attention scale (the Div of the scores by sqrt(head size) = 2) perturbed in the graph: the
    mapping reads the same weights, the proof sees the difference."""
    _, graph = exported
    broken = onnx.ModelProto()
    broken.CopyFrom(graph)
    g = onnx_bert.index_graph(broken, PATH)
    div = next(n for n in broken.graph.node if n.op_type == "Div" and "attention" in n.name)
    scale = g.producer[div.input[1]]
    assert scale.op_type == "Constant" and float(onnx.numpy_helper.to_array(scale.attribute[0].t)) == 2.0
    scale.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(2.5, dtype=np.float32)))
    path = tmp_path / "scaled.onnx"
    onnx.save(broken, str(path))
    with pytest.raises(onnx_bert.OnnxMappingError, match=r"scaled\.onnx: the rebuilt BertModel differs"):
        onnx_bert.rebuild(path, batches())


def test_a_missing_initialiser_is_refused(exported):
    _, graph = exported
    broken = onnx.ModelProto()
    broken.CopyFrom(graph)
    name = next(t.name for t in broken.graph.initializer if t.name.startswith("onnx::MatMul"))
    kept = [t for t in broken.graph.initializer if t.name != name]
    del broken.graph.initializer[:]
    broken.graph.initializer.extend(kept)
    with pytest.raises(onnx_bert.OnnxMappingError, match=r"tiny\.onnx: cannot map the graph onto a BertModel: layer 0"):
        onnx_bert.map_graph(broken, PATH)


def test_a_graph_that_is_no_bert_is_refused():
    x = onnx.helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, ["b", "l"])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64, ["b", "l"])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["input_ids"], ["y"])], "g", [x], [y])
    with pytest.raises(onnx_bert.OnnxMappingError, match="0 Gathers of a constant table by input_ids"):
        onnx_bert.map_graph(onnx.helper.make_model(graph), PATH)


def test_row_cosine_tells_a_shared_vocabulary_from_a_shifted_one():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(500, 16))
    tuned = table + 0.3 * rng.normal(size=table.shape)  # the same rows after some training
    assert onnx_bert.median_row_cosine(table, tuned) > 0.9
    assert abs(onnx_bert.median_row_cosine(table, np.roll(tuned, 1, axis=0))) < 0.2
