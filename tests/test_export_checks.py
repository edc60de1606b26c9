"""export.onnx_export's check list, without a model: the loop runs every check in order and
collects each failure (a raising check included), the error lists them all, the lists per variant
and task are the documented ones, and the value checks read one dev pass through the session."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from export.onnx_export import (
    STRUCTURE_CHECKS,
    DevRows,
    ExportConfig,
    ExportValidationError,
    Measured,
    ValidationContext,
    VariantCheck,
    VariantProbe,
    check_agreement,
    check_input_names,
    check_loads_sequence_classifier,
    check_loads_token_classifier,
    check_max_abs_diff,
    check_output_names,
    failure_line,
    run_checks,
    variant_checks,
)

STRUCTURE = ["onnx_checker", "ort_session", "input_names", "output_names", "dynamic_axes", "new_shape"]


def test_a_failed_or_raising_check_is_collected_and_the_rest_still_run():
    ran: list[str] = []

    def holds(probe):
        ran.append("holds")
        return Measured(True, 1.0, 2.0, "within")

    def exceeds(probe):
        ran.append("exceeds")
        return Measured(False, 3.0, 2.0, "over the bound\nsecond line")

    def raises(probe):
        ran.append("raises")
        raise ValueError("no figure")

    checks = [VariantCheck("first", holds), VariantCheck("second", exceeds), VariantCheck("third", raises),
              VariantCheck("fourth", holds)]
    results = run_checks(checks, probe=None)
    assert ran == ["holds", "exceeds", "raises", "holds"]  # in order, none skipped after a failure
    assert [(c.name, c.passed) for c in results] == [("first", True), ("second", False), ("third", False),
                                                     ("fourth", True)]
    assert (results[1].figure, results[1].threshold) == (3.0, 2.0)
    assert results[2].figure is None and results[2].threshold is None
    assert results[2].detail.startswith("ValueError: no figure\nTraceback")  # the traceback is kept

    failures = [failure_line("teacher", "int8", c) for c in results if not c.passed]
    assert failures == ["teacher/int8 second: 3.0000 (bound 2.0000); over the bound",
                        "teacher/int8 third: None; ValueError: no figure"]
    err = ExportValidationError(failures, Path("runs/x/onnx/validation.json"))
    assert str(err) == ("2 validation check(s) failed (report: runs/x/onnx/validation.json):\n"
                        "  - teacher/int8 second: 3.0000 (bound 2.0000); over the bound\n"
                        "  - teacher/int8 third: None; ValueError: no figure")
    assert err.failures == failures


@pytest.mark.parametrize("ner", [False, True])
def test_each_variant_gets_the_documented_checks_in_order(ner):
    values = {"fp32": ["dev_max_abs_diff", "dev_agreement"], "o2": ["dev_max_abs_diff", "dev_agreement"],
              "int8": ["dev_decided_agreement", "dev_logit_error", "dev_entity_f1" if ner else "dev_accuracy"]}
    for variant, own in values.items():
        checks = variant_checks(variant, ner=ner)
        assert [c.name for c in checks] == STRUCTURE + own + ["loads_with_optimum"]
        assert checks[: len(STRUCTURE)] == list(STRUCTURE_CHECKS)
        loads = check_loads_token_classifier if ner else check_loads_sequence_classifier
        assert checks[-1].measure is loads


class FakeSession:
    """Stands in for an onnxruntime.InferenceSession whose logits are the input ids as floats;
    counts its runs."""

    def __init__(self):
        self.runs = 0

    def get_inputs(self):
        return [SimpleNamespace(name="input_ids", shape=["batch_size", "sequence_length"]),
                SimpleNamespace(name="attention_mask", shape=["batch_size", "sequence_length"])]

    def get_outputs(self):
        return [SimpleNamespace(name="logits", shape=["batch_size", 2])]

    def run(self, names, feed):
        self.runs += 1
        return [feed["input_ids"].astype(np.float32)]  # (B, 2): one logit per "token"


def probe(variant: str, session: FakeSession | None) -> VariantProbe:
    """Four dev rows in one batch; the reference is the session's logits but row 0's first logit
    is 1e-3 higher (over fp32's 1e-4 bound, far from flipping any label)."""
    ids = np.array([[3, 0], [0, 3], [2, 1], [1, 2]], dtype=np.int64)  # (4, 2): labels 0 1 0 1, margins 3 3 1 1
    reference = ids.astype(np.float32)
    reference[0, 0] += 1e-3
    dev = DevRows(source="dev", size=4, texts=["a", "b", "c", "d"], pairs=None, labels=np.array([0, 1, 0, 1]),
                  batches=[{"input_ids": ids, "attention_mask": np.ones_like(ids)}], order=np.arange(4),
                  groups=None, ner=None)
    ctx = ValidationContext(cfg=ExportConfig(), dev=dev, reference=reference,
                            input_names=["input_ids", "attention_mask"], id2label={0: "neg", 1: "pos"}, num_labels=2)
    return VariantProbe(variant=variant, variant_dir=Path("nowhere"), ctx=ctx, tokenizer=None,
                        figures={"size_mb": None}, loaded=session)


def test_value_checks_share_one_dev_pass_and_hold_each_figure_to_its_bound():
    session = FakeSession()
    p = probe("fp32", session)
    checks = [VariantCheck("input_names", check_input_names), VariantCheck("output_names", check_output_names),
              VariantCheck("dev_max_abs_diff", check_max_abs_diff), VariantCheck("dev_agreement", check_agreement)]
    diff, agreement = run_checks(checks, p)[2:]
    assert session.runs == 1  # the dev split ran through the session once, for both value checks
    assert not diff.passed and diff.figure == pytest.approx(1e-3, rel=1e-3) and diff.threshold == 1e-4
    assert agreement.passed and agreement.figure == 1.0 and agreement.threshold == 1.0
    assert "0 of 4 decided rows differ (fp32 margin >= 0.0002)" in agreement.detail
    assert p.figures["size_mb"] is None and p.figures["accuracy"] == 1.0 and p.figures["decided_rows"] == 4


def test_checks_after_a_failed_session_fail_naming_it():
    results = run_checks([VariantCheck("input_names", check_input_names),
                          VariantCheck("dev_agreement", check_agreement)], probe("o2", None))
    assert [c.passed for c in results] == [False, False]
    assert all("not run: ONNX Runtime could not load the model (see ort_session)" in c.detail for c in results)
