"""Three ways to make a student classifier.

- ``subset``:     a layer subset of the teacher (DistilBERT-style): keep N of its encoder layers,
                  evenly spaced by default (first and last included) or listed explicitly; the
                  embeddings and the head come along with their fine-tuned weights.
- ``pretrained``: any other pretrained model (folder or hub name), with its own tokenizer: the
                  cache holds per-example logits (ner: per-word), so each model tokenises the raw
                  text (ner: aligns its own sub-tokens to the words) itself; ``pretrained_layers``
                  keeps its first N layers (a 2-layer MiniLM under an mpnet teacher). The bottom
                  layers, not evenly spaced ones: an untuned model cut to its first layers still
                  computes what it learnt, and dropping top layers was the best way to shrink a
                  pretrained model in Sajjad et al. (2020, "On the effect of dropping layers of
                  pre-trained transformer models"); on SST-2 under the mpnet teacher a 2-layer
                  MiniLM kept as layers [0, 5] reached 0.8085 distilled (one seed; docs/RESULTS.md).
- ``fresh``:      the teacher's architecture family with a new size (layers, hidden, heads),
                  randomly initialised, trained from scratch.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from distill.config import ConfigError
from distill.modeling import (
    auto_model_class,
    encoder_layers,
    load_classifier,
    resolve_model_name,
    set_dropout,
)
from students.config import StudentConfig

STUDENT_KINDS = ("subset", "pretrained", "fresh")


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """``keep`` layer indices out of ``total``, spread evenly, first and last included
    (6 -> 3 gives [0, 2, 5]; DistilBERT's every-other-layer choice is ``layer_ids=0,2,4``)."""
    if not 0 < keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} layers")
    if keep == 1:
        return [total - 1]
    return sorted({int(round(i * (total - 1) / (keep - 1))) for i in range(keep)})


def layer_subset(source: Path | str, *, keep: int, layer_ids: list[int] | None, id2label: dict[int, str],
                 dropout: float | None, attn: str | None = None, task: str = "classification"
                 ) -> tuple[nn.Module, list[int], int]:
    """A model (the teacher's folder, or any pretrained folder or hub name) with only some of its
    encoder layers; returns (model, kept indices, the source's layer count)."""
    model = load_classifier(str(source), id2label=id2label, dropout=dropout, attn_implementation=attn, task=task)
    layers = encoder_layers(model)
    total = len(layers)
    kept = list(layer_ids) if layer_ids else evenly_spaced_layers(len(layers), keep)
    bad = [i for i in kept if not 0 <= i < len(layers)]
    if bad or len(set(kept)) != len(kept) or kept != sorted(kept):
        raise ValueError(f"layer_ids {kept}: must be distinct increasing indices in [0, {len(layers)})")
    blocks = [layers[i] for i in kept]
    for i in reversed(range(len(layers))):  # empty the list in place: its parent keeps the same object
        del layers[i]
    layers.extend(blocks)
    for attr in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(model.config, attr):
            setattr(model.config, attr, len(kept))
    return model, kept, total


def fresh_model(teacher_dir: Path, *, layers: int, hidden: int, heads: int, id2label: dict[int, str],
                dropout: float | None, attn: str | None = None, task: str = "classification") -> nn.Module:
    """A random-initialised model of the teacher's family with a new size."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(teacher_dir)
    if hidden % heads:
        raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
    config.num_hidden_layers, config.hidden_size, config.num_attention_heads = layers, hidden, heads
    if hasattr(config, "intermediate_size"):
        config.intermediate_size = 4 * hidden
    config.num_labels = len(id2label)
    config.id2label, config.label2id = dict(id2label), {v: k for k, v in id2label.items()}
    if dropout is not None:
        set_dropout(config, dropout)
    kwargs = {"attn_implementation": attn} if attn else {}
    return auto_model_class(task).from_config(config, **kwargs)


def build_student(cfg: StudentConfig, *, teacher_dir: Path, id2label: dict[int, str], attn: str | None = None,
                  task: str = "classification") -> tuple[nn.Module, str, dict]:
    """(model, tokenizer source, description for metrics.json) for ``cfg.student``, its word
    embeddings frozen when ``cfg.freeze_embeddings``. ``attn``: an attention implementation to load
    with (``eager`` when attention maps are needed); ``task``: distill.json's (ner: a token classifier)."""
    if cfg.freeze_embeddings and cfg.student == "fresh":
        raise ConfigError("--freeze_embeddings: a fresh student's word embeddings are random; train them")
    model, source, description = _build(cfg, teacher_dir=teacher_dir, id2label=id2label, attn=attn, task=task)
    if cfg.freeze_embeddings:
        description["word_embeddings"] = f"frozen ({freeze_word_embeddings(model):,} parameters)"
    return model, source, description


def freeze_word_embeddings(model: nn.Module) -> int:
    """Stop training the word-embedding table (its parameters' count returned). Why: in a 1-3 layer
    student most parameters are that table (MiniLM: 11.7 M of 15.6 M at 2 layers), and AdamW updating
    it densely every step halved the 2-layer student's training speed on one CPU thread."""
    weight = model.get_input_embeddings().weight
    weight.requires_grad_(False)
    return weight.numel()


def _build(cfg: StudentConfig, *, teacher_dir: Path, id2label: dict[int, str], attn: str | None,
           task: str) -> tuple[nn.Module, str, dict]:
    if cfg.student == "subset":
        model, kept, total = layer_subset(teacher_dir, keep=cfg.keep_layers, layer_ids=cfg.layer_ids or None,
                                          id2label=id2label, dropout=cfg.dropout, attn=attn, task=task)
        return model, str(teacher_dir), {"kind": "subset", "layers_kept": kept, "teacher_layers": total}
    if cfg.student == "pretrained":
        source = resolve_model_name(cfg.pretrained)
        if cfg.pretrained_layers is None:
            model = load_classifier(source, id2label=id2label, dropout=cfg.dropout, attn_implementation=attn,
                                    task=task)
            return model, source, {"kind": "pretrained", "pretrained": cfg.pretrained}
        from transformers import AutoConfig

        available = AutoConfig.from_pretrained(source).num_hidden_layers
        if not 0 < cfg.pretrained_layers <= available:
            raise ValueError(f"--pretrained_layers={cfg.pretrained_layers}: {source} has {available} layers")
        model, kept, total = layer_subset(source, keep=cfg.pretrained_layers,
                                          layer_ids=list(range(cfg.pretrained_layers)), id2label=id2label,
                                          dropout=cfg.dropout, attn=attn, task=task)
        # not "layers_kept": that key names teacher layers (the layer losses map onto them)
        return model, source, {"kind": "pretrained", "pretrained": cfg.pretrained, "own_layers_kept": kept,
                               "own_layers": total}
    if cfg.student == "fresh":
        model = fresh_model(teacher_dir, layers=cfg.fresh_layers, hidden=cfg.fresh_hidden, heads=cfg.fresh_heads,
                            id2label=id2label, dropout=cfg.dropout, attn=attn, task=task)
        return model, str(teacher_dir), {"kind": "fresh", "layers": cfg.fresh_layers, "hidden": cfg.fresh_hidden,
                                         "heads": cfg.fresh_heads}
    raise ValueError(f"unknown student kind {cfg.student!r}; choose one of {', '.join(STUDENT_KINDS)}")
