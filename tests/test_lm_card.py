"""distill/lm_card.py on hand-written LM folders: the JSON files teachers/lm.py and students/lm.py
``_finish`` write (their key sets copied from that code), no model. The card's YAML front matter
parses, its model-index figures are metrics.json's, a student's card names its teacher and its loss
weights, the control's says it is CE-only, and a figure metrics.json lacks is left out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from distill import layout
from distill.artifacts import ModelInfo, write_model_info
from distill.config import ConfigError
from distill.data import DataSpec
from distill.lm_card import render_lm_card, write_lm_card
from distill.lm_data import LMDataSpec

TARGETS = {"rule": "topk", "k": 5, "temperature": 1.0, "seed": 0}  # dataclasses.asdict(TargetSpec)
FRESH = {"kind": "fresh", "layers": 1, "hidden": 16, "heads": 2, "kv_heads": 1, "intermediate": 64}


def _write(folder: Path, info: ModelInfo, metrics: dict | None, train_config: dict) -> Path:
    folder.mkdir(parents=True)
    write_model_info(folder, info)
    (folder / layout.TRAIN_CONFIG_FILE).write_text(json.dumps(train_config))
    if metrics is not None:
        (folder / layout.METRICS_FILE).write_text(json.dumps(metrics))
    return folder


def teacher_metrics() -> dict:
    """teachers/lm.py run_lm's result (its data report, score_targets' cache report, teacher_check)."""
    cache = {"rows": 40, "complete": True, "bytes": 5440, "dtype": "uint8", "positions": 600, "bytes_per_token": 34,
             "rule": "topk", "k": 5, "temperature": 1.0, "blocks_scored_this_call": 40, "tokens_per_s": 900.0,
             "processes": 1}
    data = {"documents": 40, "empty_skipped": 0, "train_documents": 31, "heldout_documents": 8, "train_duplicates": 1,
            "train_duplicates_dropped": 0, "heldout_overlap_dropped": 1, "train_blocks": 40, "heldout_blocks": 9,
            "train_tokens": 640, "heldout_tokens": 144, "block_length": 16, "separator_id": 0}
    check = {"heldout_perplexity": 301.25, "next_token_accuracy": 0.0125, "tokens": 30, "blocks": 2, "seconds": 0.1,
             "continuations": [{"prompt": "the film", "continuation": " was good"}]}
    return {"task": "lm", "base_model": "smollm2", "source": "/assets/smollm2-135m-instruct", "parameters": 134515008,
            "vocab_size": 49152, "data": data, "cache": {"train": cache, "heldout": {**cache, "positions": 135}},
            "check": check, "device": "cpu", "torch_threads": 1, "peak_rss_mb": 900.0}


def student_metrics(role: str) -> dict:
    """students/lm.py _finish's result (student_heldout's figures, loop_figures' keys)."""
    w_kd, w_ce = (0.7, 0.3) if role == layout.STUDENT else (0.0, 1.0)
    heldout = {"perplexity": 250.5, "nll": 5.52, "next_token_accuracy": 0.05, "tokens": 135,
               "teacher_top1_agreement": 0.25}
    return {"task": "lm", "role": role, "student": FRESH, "seed": 0, "w_kd": w_kd, "w_ce": w_ce, "temperature": 1.0,
            "parameters": 9000, "heldout": heldout, "heldout_perplexity": heldout["perplexity"],
            "teacher_top1_agreement": heldout["teacher_top1_agreement"], "train_blocks": 40, "tokens_seen": 1280,
            "steps_done": 20, "world_size": 1, "device": "cpu", "torch_threads": 1, "train_time_s": 1.0,
            "wall_time_s": 1.5, "train_samples_per_s": 80.0, "best_step": 20, "total_steps": 20,
            "stopped_early": False, "peak_rss_mb": 800.0, "history": [], "train_tokens_per_s": 1280.0}


@pytest.fixture
def run(tmp_path) -> Path:
    """<run>/teacher, student, student_ce as the lm stages leave them (distill.json as they build it)."""
    data = LMDataSpec(path=str(tmp_path / "docs.jsonl"), block_length=16, heldout_fraction=0.2)
    teacher = layout.teacher_dir(tmp_path)
    _write(teacher, ModelInfo(role=layout.TEACHER, task="lm", labels=[], max_length=16, data=data,
                              architecture={"base_model": "smollm2", "source": "/assets/smollm2-135m-instruct",
                                            "targets": TARGETS}), teacher_metrics(), {"task": "lm", "target_k": 5})
    for role in (layout.STUDENT, layout.STUDENT_CE):
        info = ModelInfo(role=role, task="lm", labels=[], max_length=16, data=data,
                         architecture={**FRESH, "teacher": str(teacher), "targets": TARGETS})
        _write(layout.stage_dir(tmp_path, role), info, student_metrics(role), {"select_blocks": 2, "seed": 0})
    return tmp_path


def read_card(text: str) -> tuple[dict, str]:
    """(front matter as yaml.safe_load reads it, Markdown body)."""
    assert text.startswith("---\n")
    head, body = text[len("---\n"):].split("\n---\n", 1)
    meta = yaml.safe_load(head)
    assert isinstance(meta, dict)
    return meta, body


def figures(meta: dict) -> dict[str, float]:
    """model-index metric type -> value."""
    [entry] = meta["model-index"]
    [result] = entry["results"]
    assert result["dataset"]["split"] == "heldout" and result["task"]["type"] == "text-generation"
    return {m["type"]: m["value"] for m in result["metrics"]}


def test_the_teacher_card_says_what_it_is_and_its_check(run):
    folder = layout.teacher_dir(run)
    path = write_lm_card(folder)
    assert path == folder / "README.md"
    meta, body = read_card(path.read_text(encoding="utf-8"))
    m = teacher_metrics()
    assert (meta["library_name"], meta["pipeline_tag"]) == ("transformers", "text-generation")
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["datasets"] == [str(run / "docs.jsonl")] and meta["tags"] == ["distill", "teacher", "text-generation"]
    assert figures(meta) == {"perplexity": m["check"]["heldout_perplexity"],
                             "accuracy": m["check"]["next_token_accuracy"]}  # no agreement: it is the teacher
    assert "rule **topk**, **k = 5** at T = 1" in body and "34 bytes per token" in body
    assert "| held-out perplexity | 301.2500 |" in body and "| held-out tokens checked | 30 |" in body
    assert '`"the film"` → `" was good"`' in body
    assert f'AutoModelForCausalLM.from_pretrained("{folder}")' in body and "model.generate(" in body


def test_the_student_card_names_its_teacher_and_loss(run):
    meta, body = read_card(render_lm_card(layout.student_dir(run)))
    m = student_metrics(layout.STUDENT)
    assert meta["base_model"] == str(layout.teacher_dir(run))
    assert "knowledge-distillation" in meta["tags"]
    assert figures(meta) == {"perplexity": m["heldout_perplexity"], "accuracy": m["heldout"]["next_token_accuracy"],
                             "agreement": m["teacher_top1_agreement"]}
    assert f"distilled from the teacher `{layout.teacher_dir(run)}`" in body
    assert "held-out perplexity 301.2500" in body  # the teacher's, from its metrics.json
    assert "KL(teacher ‖ student) over the cached top-k + tail + w_ce · CE(next token)" in body
    t, w_kd, w_ce = (float(x) for x in re.search(r"\*\*T = (\S+)\*\*, \*\*w_kd = (\S+)\*\*, \*\*w_ce = (\S+)\*\*",
                                                 body).groups())
    assert (t, w_kd, w_ce) == (m["temperature"], m["w_kd"], m["w_ce"]) == (1.0, 0.7, 0.3)
    assert "randomly initialised (`--student=fresh`): 1 block of width 16" in body
    assert "| tokens seen in training | 1,280 |" in body and "first 2 held-out blocks" in body


def test_the_control_card_says_it_is_ce_only(run):
    meta, body = read_card(render_lm_card(layout.student_ce_dir(run)))
    assert "baseline" in meta["tags"] and "knowledge-distillation" not in meta["tags"]
    assert "CE-only control" in body and "not distilled" in body and "(`w_kd = 0`, `w_ce = 1`)" in body
    assert "T = " not in body and "KL(" not in body
    assert figures(meta)["perplexity"] == student_metrics(layout.STUDENT_CE)["heldout_perplexity"]


def test_a_missing_figure_is_left_out(run):
    folder = layout.student_dir(run)
    m = student_metrics(layout.STUDENT)
    del m["teacher_top1_agreement"], m["heldout"]["teacher_top1_agreement"], m["tokens_seen"]
    (folder / layout.METRICS_FILE).write_text(json.dumps(m))
    meta, body = read_card(render_lm_card(folder))
    assert set(figures(meta)) == {"perplexity", "accuracy"}
    assert "agreement with the teacher" not in body and "tokens seen" not in body
    (folder / layout.METRICS_FILE).unlink()
    meta, body = read_card(render_lm_card(folder))
    assert "model-index" not in meta and "No held-out figures recorded" in body


def test_a_classifier_folder_is_refused(run):
    folder = run / "classifier"
    _write(folder, ModelInfo(role=layout.TEACHER, task="classification", labels=["0", "1"], max_length=16,
                             data=DataSpec(path="x")), None, {})
    with pytest.raises(ConfigError, match="model_card.py"):
        render_lm_card(folder)


def test_a_subset_student_says_which_blocks_it_kept(run):
    folder = layout.student_dir(run)
    m = {**student_metrics(layout.STUDENT), "student": {"kind": "subset", "layers_kept": [0, 29], "teacher_layers": 30}}
    (folder / layout.METRICS_FILE).write_text(json.dumps(m))
    body = read_card(render_lm_card(folder))[1]
    assert "2 of the teacher's 30 blocks ([0, 29]) with its embeddings" in body and "`--student=subset`" in body
