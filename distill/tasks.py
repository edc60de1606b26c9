"""What differs between the two tasks a classifier-shaped model can have, in one place.

``distill.json``'s ``task`` says which a model folder holds: ``classification`` (a label per text)
or ``ner`` (a tag per word, token classification; distill/ner.py). The stages dispatch on it once
each (teachers/finetune.py ``run``, students/distill.py ``main``); everything that only needs to
*say* something about the task (the figure a table ranks by, what one example is called, the
classes that load the model, the model card's metadata) reads it here instead of asking
``task == "ner"`` again. A causal LM (``task: lm``) has stages and reports of its own
(teachers/lm.py, students/lm.py, distill/lm_report.py) and no entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.config import ConfigError


@dataclass(frozen=True)
class Task:
    """The facts of one task that tables, reports and model cards read."""

    name: str  # distill.json's task
    example: str  # what one example is called, plural: "rows" (a text) | "sentences" (words with tags)
    score: str  # metrics.json key of the figure tables compare and rank by
    score_name: str  # that figure in words, for table headers and plots
    pipeline_tag: str  # the Hugging Face pipeline tag of the model card
    auto_class: str  # transformers class that loads the PyTorch folder
    ort_class: str  # optimum.onnxruntime class that loads an ONNX variant
    metric_ids: tuple[str, ...]  # the model card's `metrics:` (Hugging Face evaluate ids)
    # (model-index type, metrics.json key, name): the PyTorch model's dev figures on its card
    model_figures: tuple[tuple[str, str, str], ...]
    # (model-index type, key in validation.json's variant figures, name): an ONNX variant's dev figures
    variant_figures: tuple[tuple[str, str, str], ...]
    variant_score: str  # key of the score in validation.json's variant figures and bench.json ("dev_" + it)
    label_kind: str  # what its labels are called: "labels" | "IOB2 tags"
    dev_count: tuple[str, str]  # (metrics.json key, word) of what the dev figures count: examples | entities


CLASSIFICATION = Task(
    name="classification", example="rows", score="accuracy", score_name="dev accuracy",
    pipeline_tag="text-classification", auto_class="AutoModelForSequenceClassification",
    ort_class="ORTModelForSequenceClassification", metric_ids=("accuracy", "f1"),
    model_figures=(("accuracy", "accuracy", "dev accuracy"), ("f1", "macro_f1", "dev macro-F1")),
    variant_figures=(("accuracy", "accuracy", "dev accuracy"),
                     ("agreement", "agreement", "dev labels equal to PyTorch fp32's")),
    variant_score="accuracy", label_kind="labels", dev_count=("examples", "rows"))

NER = Task(
    name="ner", example="sentences", score="f1", score_name="dev entity F1",
    pipeline_tag="token-classification", auto_class="AutoModelForTokenClassification",
    ort_class="ORTModelForTokenClassification", metric_ids=("seqeval", "accuracy"),
    model_figures=(("f1", "f1", "dev entity F1 (seqeval, micro)"), ("precision", "precision", "dev entity precision"),
                   ("recall", "recall", "dev entity recall"), ("accuracy", "token_accuracy", "dev token accuracy")),
    variant_figures=(("f1", "entity_f1", "dev entity F1 (seqeval, micro)"),
                     ("accuracy", "token_accuracy", "dev token accuracy"),
                     ("agreement", "agreement", "dev word tags equal to PyTorch fp32's")),
    variant_score="entity_f1", label_kind="IOB2 tags", dev_count=("entities", "entities"))


def task_of(name: str) -> Task:
    """The task a distill.json names; a ``ConfigError`` for any other (an lm folder included)."""
    for task in (CLASSIFICATION, NER):
        if task.name == name:
            return task
    raise ConfigError(f"task {name!r}: expected classification or ner here")
