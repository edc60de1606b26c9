"""distill/tasks.py: the facts of each task agree with the libraries that load the models."""

import pytest

from distill.config import ConfigError
from distill.modeling import TASKS, auto_model_class
from distill.tasks import CLASSIFICATION, NER, task_of


def test_every_task_a_stage_knows_has_facts():
    assert [task_of(name).name for name in TASKS] == list(TASKS)
    with pytest.raises(ConfigError, match="task 'lm'"):
        task_of("lm")  # a causal LM has reports of its own: asking it for a classifier's facts is a bug


@pytest.mark.parametrize("task", [CLASSIFICATION, NER], ids=lambda t: t.name)
def test_classes_and_pipeline_tag_are_the_libraries_own(task):
    from transformers.pipelines import SUPPORTED_TASKS

    assert auto_model_class(task.name).__name__ == task.auto_class
    assert any(cls.__name__ == task.auto_class for cls in SUPPORTED_TASKS[task.pipeline_tag]["pt"])
    import optimum.onnxruntime as ort

    assert hasattr(ort, task.ort_class)


def test_the_score_is_among_the_cards_model_figures():
    for task in (CLASSIFICATION, NER):
        assert task.score in [key for _, key, _ in task.model_figures]
        assert task.variant_score in [key for _, key, _ in task.variant_figures]
