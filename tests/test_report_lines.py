"""distill/report.py's KD lines: one text for classification and NER, in each task's figure and unit."""

from distill.report import kd_lines
from distill.tasks import CLASSIFICATION, NER


def student(score_key: str, score: float, **extra) -> dict:
    return {score_key: score, "macro_f1": score - 0.01, "student": {"kind": "subset", "layers_kept": [0, 5],
            "teacher_layers": 6}, "temperature": 2.0, "w_kd": 0.5, "w_ce": 0.5, "labelled_rows": 7000,
            "transfer_rows": 40000, "transfer": ["unused_train"], **extra}


def test_classification_gain_and_recipe():
    metrics = {"student": student("accuracy", 0.86, w_hidden=0.0, w_attn=0.0),
               "student_ce": {"accuracy": 0.84, "macro_f1": 0.82}}
    text = "\n".join(kd_lines(metrics, CLASSIFICATION))
    assert "labelled rows alone, the KD student also on 40,000 teacher-scored rows): +2.00 points of dev accuracy" in text
    assert "(+3.00 macro-F1)" in text  # 0.85 - 0.82
    assert "teacher layers kept [0, 5] of 6; T = 2.0, w_kd = 0.5, w_ce = 0.5, w_hidden = 0.0, w_attn = 0.0" in text
    assert "7,000 labelled rows + 40,000 teacher-scored rows (unused_train)." in text


def test_ner_gain_in_entity_f1_and_words():
    metrics = {"student": student("f1", 0.70, train_words=12345, transfer_rows=0, transfer=[]),
               "student_ce": {"f1": 0.75, "macro_f1": 0.70}}
    text = "\n".join(kd_lines(metrics, NER))
    assert "labelled sentences alone): -5.00 points of dev entity F1" in text  # no transfer sentences: not named
    assert "w_hidden" not in text and "(no transfer set), 12,345 words." in text
    assert kd_lines({"student": None, "student_ce": None}, NER) == []
