"""Model cards: a ``README.md`` beside every model, in the Hugging Face convention (YAML front
matter, then Markdown), rendered from the run's JSON files and nothing else.

    <run>/<model>/README.md                  a PyTorch model (teacher, student, student_ce): its
        distill.json, metrics.json and train_config.json; a student's teacher (distill.json
        ``architecture.teacher``): its distill.json and metrics.json; the export's
        ``onnx/<model>/validation.json`` (the int8 accuracy) when it is newer than the weights; this
        model's rows of ``bench/bench.json`` when the bench is newer than the weights and the export
    <run>/onnx/<model>/<variant>/README.md   an ONNX variant (fp32, o2, int8): its distill.json (the
        max length export validated at), ``../validation.json`` (this variant's checks and figures),
        the PyTorch model's files as above, and this variant's bench row when the bench is newer
        than its model.onnx (bench times o2 and int8, not fp32)

Who writes them: the teacher stage (classification and ner) and the student stage (student,
student_ce; classification and ner) once metrics.json is written; export, each variant folder
(in staging, so a card is installed with its model) and the PyTorch model's card again; bench,
the cards of every model it timed and of their variants. No stage writes card text:
``write_card(directory)`` renders what the files say now; a figure whose file is missing or
older than the model is left out, and the card names the command that adds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from distill import layout
from distill.artifacts import MODEL_INFO, ModelInfo, read_model_info
from distill.config import atomic_write_text
from distill.layout import (
    BENCH,
    INT8,
    METRICS_FILE,
    O2,
    ONNX_FILE,
    REFERENCE,
    TEACHER,
    VALIDATION_FILE,
    VARIANTS,
    onnx_model_dir,
)
from distill.layout import BENCH_VARIANT as _BENCH_NAMES
from distill.tasks import task_of

CARD_FILE = "README.md"
BENCH_FILE = Path(BENCH) / "bench.json"  # under the run directory
BENCH_VARIANT = {k: _BENCH_NAMES[k] for k in (None, O2, INT8)}  # folder -> bench.json's variant (bench times these)
VARIANT_WORDS = {"fp32": "the fp32 graph as optimum's exporter wrote it",
                 "o2": "the fp32 graph after ONNX Runtime's O2 optimisation (fused kernels)",
                 "int8": "dynamic int8 quantisation of the fp32 graph (int8 weights, activations quantised per call)"}
KNOWN_BASES = {"packaged": "sentence-transformers/all-MiniLM-L6-v2",  # what --base_model's short names are
               "mpnet": "sentence-transformers/all-mpnet-base-v2"}
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
@dataclass
class CardFacts:
    """What one card says, as read from the run's files (nothing is measured here)."""

    directory: Path  # the folder the card describes
    shown_as: str  # how the card names that folder (a variant built in staging: where it is installed)
    name: str  # the model's name in its run: teacher, student, student_ce ...
    variant: str | None  # None: a PyTorch folder; fp32 | o2 | int8: an ONNX variant of one
    info: ModelInfo  # the folder's own distill.json
    model_dir: Path  # the PyTorch model folder: the folder itself, or the one the variant was exported from
    metrics: dict  # the PyTorch model's metrics.json ({} when it has none)
    train_config: dict  # the PyTorch model's train_config.json ({} when it has none)
    teacher: dict  # a student's teacher: {"dir": str, "info": ModelInfo | None, "metrics": dict}; {} otherwise
    validation: dict | None  # the export's validation.json (None: none, or older than the weights)
    bench: list[dict]  # this card's rows of the last bench ([] when none is newer than the model)


# ---------------------------------------------------------------------------------------------
# reading


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def _weights(model_dir: Path) -> Path:
    """The file whose age says when the model's weights were written."""
    return next((model_dir / w for w in WEIGHTS if (model_dir / w).is_file()), model_dir / MODEL_INFO)


def _bench_rows(run_dir: Path, name: str, variant: str | None, *, after: list[Path]) -> list[dict]:
    """``name``'s rows of the run's last bench (a variant: its own row; the PyTorch folder: all of
    them), when bench.json is at least as new as every file of ``after``; else []."""
    path = run_dir / BENCH_FILE
    if not path.is_file() or any(_mtime(path) < _mtime(p) for p in after):
        return []
    rows = [r for r in _read(path)["rows"] if r.get("model") == name]
    return rows if variant is None else [r for r in rows if r.get("variant") == BENCH_VARIANT.get(variant)]


def _teacher_of(info: ModelInfo) -> dict:
    """A student's teacher as its files describe it ({} for a teacher)."""
    teacher_dir = info.teacher_dir
    if info.role == TEACHER or teacher_dir is None:
        return {}
    teacher = read_model_info(teacher_dir) if (teacher_dir / MODEL_INFO).is_file() else None
    return {"dir": str(teacher_dir), "info": teacher, "metrics": _read(teacher_dir / METRICS_FILE) or {}}


def gather(directory: str | Path, *, shown_as: str | None = None) -> CardFacts:
    """The facts of ``directory``'s card: a PyTorch model folder, or an ONNX variant folder (its
    model.onnx beside distill.json, validation.json one level up)."""
    directory = Path(directory)
    info = read_model_info(directory)
    variant = directory.name if (directory / ONNX_FILE).is_file() else None
    if variant is None:
        model_dir, name = directory, directory.name
        export = onnx_model_dir(directory.parent, name) / VALIDATION_FILE
        validation = _read(export) if _mtime(export) >= _mtime(_weights(directory)) else None
        after = [_weights(directory)] + ([export] if validation else [])
    else:
        validation = _read(directory.parent / VALIDATION_FILE)  # written before the cards, staging or not
        name = Path(validation["model_dir"]).name if validation else directory.parent.name
        model_dir = directory.parents[2] / name  # <run>/onnx/<model>/<variant> -> <run>/<model>
        after = [directory / ONNX_FILE]
        if validation and shown_as is None:
            shown_as = str(Path(validation["location"]) / variant)
    return CardFacts(
        directory=directory, shown_as=shown_as or str(directory), name=name, variant=variant, info=info,
        model_dir=model_dir, metrics=_read(model_dir / layout.METRICS_FILE) or {},
        train_config=_read(model_dir / layout.TRAIN_CONFIG_FILE) or {}, teacher=_teacher_of(info), validation=validation,
        bench=_bench_rows(model_dir.parent, name, variant, after=after))


# ---------------------------------------------------------------------------------------------
# the figures a card states (front matter and body share them)


def dev_figures(f: CardFacts) -> list[dict]:
    """The card's dev figures as model-index metrics: {"type", "name", "value"} straight from
    metrics.json (a PyTorch folder) or from validation.json's figures of the variant."""
    if f.variant is None:
        table, source = task_of(f.info.task).model_figures, f.metrics
    else:
        table = task_of(f.info.task).variant_figures
        source = (f.validation or {}).get("variants", {}).get(f.variant, {}).get("figures", {})
    return [{"type": kind, "name": name, "value": source[key]} for kind, key, name in table
            if isinstance(source.get(key), int | float)]


def base_model(f: CardFacts) -> str | None:
    """What the model was made from: a variant's PyTorch folder; a teacher's base model (its hub
    name for the short names); a student's pretrained model, else its teacher."""
    if f.variant is not None:
        return str(f.model_dir)
    arch = f.info.architecture
    if f.info.role == "teacher":
        base = arch.get("base_model")
        return KNOWN_BASES.get(base, base)
    if arch.get("kind") == "pretrained":
        return KNOWN_BASES.get(arch.get("pretrained"), arch.get("pretrained"))
    return arch.get("teacher")


def front_matter(f: CardFacts) -> dict:
    """The YAML header: library, pipeline, base model, data, metrics, tags and a model-index whose
    values are the dev figures of ``dev_figures``."""
    pipeline_tag, data = task_of(f.info.task).pipeline_tag, str(f.info.data.path)
    tags = ["distill", f.info.role.replace("_", "-"), pipeline_tag]
    if f.info.role != "teacher":
        tags.append("knowledge-distillation" if f.info.role == "student" else "baseline")
    if f.variant:
        tags += ["onnx", f.variant] + (["quantized"] if f.variant == "int8" else [])
    meta = {"library_name": "optimum" if f.variant else "transformers", "pipeline_tag": pipeline_tag}
    if base_model(f):
        meta["base_model"] = base_model(f)
    if f.variant == "int8":
        meta["base_model_relation"] = "quantized"
    meta.update(datasets=[data], metrics=list(task_of(f.info.task).metric_ids), tags=tags)
    figures = dev_figures(f)
    if figures:
        meta["model-index"] = [{"name": title(f), "results": [{
            "task": {"type": pipeline_tag}, "dataset": {"name": data, "type": data, "split": "dev"},
            "metrics": figures}]}]
    return meta


def title(f: CardFacts) -> str:
    return f.name if f.variant is None else f"{f.name}-onnx-{f.variant}"


# ---------------------------------------------------------------------------------------------
# the body


def _num(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else f"{value:{spec}}" if isinstance(value, int | float) else str(value)


def _unit(f: CardFacts) -> str:
    return task_of(f.info.task).example


def _transfer_words(f: CardFacts) -> str:
    """'N transfer rows (a, b)' of the teacher's cache, or of the student's training rows."""
    m = f.metrics
    if f.info.role == "teacher":
        counts = {n: c.get("rows", 0) for n, c in (m.get("transfer") or {}).items()}
        total, names = sum(counts.values()), list(counts)
    else:
        total, names = m.get("transfer_rows") or 0, list(m.get("transfer") or [])
    return f"{total:,} transfer {_unit(f)} ({', '.join(names)})" if total else f"no transfer {_unit(f)}"


def _student_build(f: CardFacts) -> str:
    arch = f.info.architecture
    kind = arch.get("kind")
    if kind == "subset":
        return (f"{len(arch.get('layers_kept', []))} of the teacher's {arch.get('teacher_layers')} encoder layers "
                f"({arch.get('layers_kept')}), their fine-tuned weights copied")
    if kind == "pretrained":
        own = f", its first {len(arch['own_layers_kept'])} layers" if arch.get("own_layers_kept") else ""
        return f"the pretrained `{arch.get('pretrained')}`{own}"
    if kind == "fresh":
        return (f"randomly initialised, {arch.get('layers')} layers of width {arch.get('hidden')} "
                f"({arch.get('heads')} heads), the teacher's architecture family")
    return "built as distill.json's architecture says"


def _teacher_line(f: CardFacts) -> str:
    t = f.teacher
    if not t:
        return "its teacher (not recorded)"
    arch = t["info"].architecture if t["info"] else {}
    base = KNOWN_BASES.get(arch.get("base_model"), arch.get("base_model"))
    score = [g for g in task_of(f.info.task).model_figures[:1] if isinstance(t["metrics"].get(g[1]), int | float)]
    figure = f", {score[0][2]} {t['metrics'][score[0][1]]:.4f}" if score else ""
    return f"the teacher `{t['dir']}` ({f'`{base}`, ' if base else ''}strategy {arch.get('strategy', '?')}{figure})"


def about(f: CardFacts) -> list[str]:
    """What the PyTorch model is: teacher, distilled student or CE-only control, and how it was made."""
    m, data = f.metrics, f.info.data.path
    rows = f"{m.get('train_rows', '?'):,}" if isinstance(m.get("train_rows"), int) else "?"
    if f.info.role == "teacher":
        arch = f.info.architecture
        base = KNOWN_BASES.get(arch.get("base_model"), arch.get("base_model"))
        lr = f", peak lr {f.train_config['lr']:g}" if isinstance(f.train_config.get("lr"), int | float) else ""
        return [f"The **teacher** of this run: `{base}` fine-tuned by `make teacher` (strategy "
                f"{arch.get('strategy', '?')}{lr}) on {rows} labelled {_unit(f)} of `{data}`. Its logits on those "
                f"{_unit(f)} and on {_transfer_words(f)} are cached in `logits/`: what its students learn from."]
    params = f"{m['parameters']:,} parameters" if isinstance(m.get("parameters"), int) else "parameters not recorded"
    if f.info.role == "student_ce":
        return [f"The **CE-only control** of this run's student: the same student ({_student_build(f)}; {params}) "
                f"trained by `make distill` on {m.get('labelled_rows', '?')} labelled {_unit(f)} of `{data}` with "
                f"cross-entropy on the labels only: no teacher, no transfer {_unit(f)}. It is not distilled; it "
                "measures what distillation added."]
    extra = ", ".join(f"{k} = {m[k]:g}" for k in ("w_hidden", "w_attn") if m.get(k))
    unit, labelled = _unit(f), m.get("labelled_rows", "?")
    rows = (f"- training {unit}: {labelled} labelled {unit} of `{data}` plus **{_transfer_words(f)}** ("
            + ("pseudo-labelled with the teacher's argmax)" if m.get("pseudo_labels") else
               "label-free: they carry the teacher's logits only)") if m.get("transfer_rows") else
            f"- training {unit}: {labelled} labelled {unit} of `{data}`, each with its label and the teacher's "
            f"logits; no transfer {unit}")
    return [f"A **student** distilled from {_teacher_line(f)} by `make distill`.",
            "",
            f"- loss: `w_kd · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + w_ce · CE(labels)` with "
            f"**T = {_num(m.get('temperature'), 'g')}**, **w_kd (alpha) = {_num(m.get('w_kd'), 'g')}**, "
            f"**w_ce = {_num(m.get('w_ce'), 'g')}**{f' (+ layer losses: {extra})' if extra else ''}",
            rows,
            f"- the student: {_student_build(f)}; {params}"]


def _variant_about(f: CardFacts) -> list[str]:
    v = (f.validation or {}).get("variants", {}).get(f.variant, {})
    q = v.get("quantization")
    target = (f" Quantised for the `{q['name']}` int8 target and validated on the {q['validated_on']['kernel_path']} "
              "kernel path (`quantization.json`).") if q else ""
    return [f"The **{f.variant}** ONNX variant of `{f.model_dir}`: {VARIANT_WORDS[f.variant]}. Written by "
            f"`make export` and validated against the PyTorch model on the dev split before it was installed.{target}",
            "", "The PyTorch model it comes from:", "", *about(f)]


def _figure_table(figures: list[dict]) -> list[str]:
    return ["| figure | value |", "|---|---|", *[f"| {g['name']} | {_num(g['value'])} |" for g in figures]]


def figures_section(f: CardFacts) -> list[str]:
    """Dev figures: metrics.json's (a PyTorch folder) or the export's checks and figures (a variant)."""
    figures = dev_figures(f)
    if f.variant is None:
        if not figures:
            return ["## Dev metrics", "", "No dev figures recorded (`metrics.json` is missing)."]
        key, word = task_of(f.info.task).dev_count
        count = f.metrics.get(key)
        where = f"{count} {word}, " if isinstance(count, int) else ""
        return ["## Dev metrics", "", f"On the dev split of `{f.info.data.path}` ({where}max length "
                f"{f.info.max_length}), from `metrics.json`:", "", *_figure_table(figures)]
    v = f.validation or {}
    own = v.get("variants", {}).get(f.variant, {})
    reference = ", ".join(f"{k.replace('_', ' ')} {_num(x)}" for k, x in v.get(REFERENCE, {}).items())
    lines = ["## Validation (`make export`)", "",
             f"All {v.get('dev_rows', '?')} dev {_unit(f)} of "
             f"`{v.get('dev_source', f.info.data.path)}` at max length {v.get('max_length', f.info.max_length)}, "
             f"against the PyTorch fp32 model ({reference}); "
             "from `../validation.json`:", "", *_figure_table(figures), "", "| check | figure | bound | passed |",
             "|---|---|---|---|"]
    for c in own.get("checks", []):
        figure = _num(c["figure"], ".4g") if c["name"].startswith("dev_") else "ok" if c["passed"] else "failed"
        bound = "" if c["threshold"] is None or not c["name"].startswith("dev_") else _num(c["threshold"], "g")
        lines.append(f"| {c['name']} | {figure} | {bound} | {'yes' if c['passed'] else '**no**'} |")
    return lines


def exports_section(f: CardFacts) -> list[str]:
    """A PyTorch folder's ONNX variants with their dev figures (the int8 accuracy among them)."""
    if f.variant is not None:
        return []
    if not f.validation:
        return ["## ONNX variants", "", "None newer than these weights: `make export` writes fp32, O2 and int8 "
                "variants under `onnx/`, each validated and with its own card."]
    score = task_of(f.info.task).variant_score
    lines = ["## ONNX variants (`make export`)", "", f"| variant | folder | dev {score.replace('_f1', ' F1')} | "
             "agreement with PyTorch | MB |", "|---|---|---|---|---|"]
    for variant, entry in f.validation.get("variants", {}).items():
        g = entry.get("figures", {})
        lines.append(f"| {variant} | `{Path(f.validation['location']) / variant}` | {_num(g.get(score))} | "
                     f"{_num(g.get('agreement'))} | {_num(g.get('size_mb'), '.1f')} |")
    return lines


def bench_section(f: CardFacts) -> list[str]:
    """Speed from the last bench: a variant's own row, or every row of the PyTorch model's (the int8
    one among them); or which command measures it."""
    if not f.bench:
        why = ("`make bench` times the O2 and int8 variants, not this one" if f.variant == "fp32" else
               "not timed since this model or its export was last written: `make bench` adds its latency here")
        return ["## Latency", "", why[0].upper() + why[1:] + "."]
    r0, score = f.bench[0], "dev_" + task_of(f.info.task).variant_score
    lines = ["## Latency (`make bench`)", "",
             f"From `bench/bench.json` ({r0.get('date', '?')}; {r0.get('cpu_model', '?')}, {r0.get('threads', '?')} "
             f"thread(s)), dev rows at max length {r0.get('max_length', f.info.max_length)}"
             f"{'' if r0.get('max_length', f.info.max_length) == f.info.max_length else f' (not {f.info.max_length})'}"
             "; batch-1 latency over "
             "dev rows at their own length, speed-up against the teacher in PyTorch:", "",
             f"| variant | dev {'entity F1' if score == 'dev_entity_f1' else 'accuracy'} | MB | batch 1 p50 / p90 ms | "
             f"{r0.get('fixed_len', '?')} tokens p50 ms | batch {r0.get('batch_size', '?')} rows/s | speed-up b1 |",
             "|---|---|---|---|---|---|---|"]
    for r in f.bench:
        lines.append(f"| {r['variant']} | {_num(r.get(score))} | {_num(r.get('size_mb'), '.1f')} | "
                     f"{_num(r.get('p50_b1_ms'), '.2f')} / {_num(r.get('p90_b1_ms'), '.2f')} | "
                     f"{_num(r.get('p50_fixed_ms'), '.2f')} | {_num(r.get('throughput_ex_s'), '.1f')} | "
                     f"{_num(r.get('speedup_p50_b1'), '.2f')}x |")
    return lines


def _long_text_words(info: ModelInfo) -> str:
    lt = info.long_text
    if info.task == "ner":
        return "the words past it get the tag O"
    if lt.mode == "head_tail":
        head = "a quarter of the budget" if lt.head_tokens is None else f"{lt.head_tokens} tokens"
        return f"long_text=head_tail: the first {head} and the last tokens are kept, the middle is not read"
    if lt.mode == "chunks":
        return (f"long_text=chunks: cut into rows of {info.max_length} tokens (overlap {lt.chunk_overlap}) whose "
                "logits are averaged (`python -m distill predict` does this; a plain pipeline truncates)")
    return "long_text=truncate: the tokens past it are not read"


def input_section(f: CardFacts) -> list[str]:
    kind = task_of(f.info.task).label_kind
    trained = (f.validation or {}).get("trained_max_length")
    note = (f" (export validated at this length; the PyTorch model was trained at {trained})"
            if f.variant and trained not in (None, f.info.max_length) else "")
    return ["## Labels and input length", "",
            f"- {len(f.info.labels)} {kind}, id: name: " + ", ".join(f"{i}: `{n}`" for i, n in enumerate(f.info.labels)),
            f"- max length: **{f.info.max_length} tokens** per example{note}; longer input: {_long_text_words(f.info)}",
            "- both from this folder's `distill.json`, which `python -m distill predict` reads"]


def usage_section(f: CardFacts) -> list[str]:
    """How to load the folder: optimum's ORTModel class (a variant) or transformers (PyTorch)."""
    task, path, length = f.info.task, f.shown_as, f.info.max_length
    pipe = ('pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="first")'
            if task == "ner" else
            f'pipeline("text-classification", model=model, tokenizer=tokenizer, truncation=True, max_length={length})')
    example = '"Alice flew to New York"' if task == "ner" else '"an example sentence"'
    facts = task_of(task)
    cls, lib = (facts.ort_class, "optimum.onnxruntime") if f.variant else (facts.auto_class, "transformers")
    imports = (f"from {lib} import {cls}\nfrom transformers import AutoTokenizer, pipeline" if f.variant else
               f"from transformers import AutoTokenizer, {cls}, pipeline")
    return ["## How to load", "", "```python", imports, "",
            f'model = {cls}.from_pretrained("{path}")', f'tokenizer = AutoTokenizer.from_pretrained("{path}")',
            f"nlp = {pipe}", f"print(nlp({example}))", "```", "",
            f"or `python -m distill predict --model {path} --input texts.txt` (JSONL out; it cuts text as the model "
            f"was trained{', tags per word' if task == 'ner' else ''}). "
            + ("ONNX Runtime on CPU." if f.variant else "PyTorch eager; `make export` writes the ONNX variants.")]


def limits_section(f: CardFacts) -> list[str]:
    """What the figures do not cover: the cut at max length, the data it has not seen, the checkpoint
    choice, the teacher it copies, int8's error."""
    m, info = f.metrics, f.info
    checks, alignment = m.get("data_checks") or {}, m.get("alignment") or {}
    lines = ["## Limits", "", f"- It reads at most {info.max_length} tokens: {_long_text_words(info)}."]
    if checks.get("max_length") == info.max_length and isinstance(checks.get("dev", {}).get("over_max_length_share"),
                                                                   float):
        lines[-1] += f" {checks['dev']['over_max_length_share']:.1%} of the dev rows were longer."
    elif alignment.get("words_cut"):
        lines[-1] += f" {alignment['words_cut']} dev words were cut."
    lines.append(f"- It has seen only `{info.data.path}` (the training split; labels {', '.join(info.labels)}): text "
                 "from another domain, language or label set is outside what it learnt, and the dev figures hold "
                 "for text like that dev split only.")
    chosen = m.get("checkpoint_chosen_on")
    if chosen == "dev":
        lines.append("- Its checkpoint was chosen on the dev split, so its dev figures are somewhat optimistic.")
    elif chosen:
        lines.append(f"- Its checkpoint was chosen on {m.get('eval_rows', '?')} held-back training rows; dev was only "
                     "measured.")
    if info.role == "student":
        lines.append("- It learnt from one teacher's outputs, that teacher's mistakes included.")
    if f.variant == "int8":
        g = (f.validation or {}).get("variants", {}).get("int8", {}).get("figures", {})
        lines.append(f"- int8 moves the logits (RMS error {_num(g.get('logit_error'), '.3f')} of fp32's, centred); "
                     "`predict` and `bench` warn on a CPU whose int8 kernel path differs from the one it was "
                     "validated on.")
    return lines


def render_card(directory: str | Path, *, shown_as: str | None = None) -> str:
    """The README.md text of a model folder (see the module docstring for what it reads)."""
    import yaml

    f = gather(directory, shown_as=shown_as)
    head = f"# {title(f)}"
    body = [head, "", *(_variant_about(f) if f.variant else about(f))]
    for section in (figures_section, exports_section, bench_section, input_section, usage_section, limits_section):
        lines = section(f)
        if lines:
            body += ["", *lines]
    sources = [layout.MODEL_INFO, layout.METRICS_FILE, layout.TRAIN_CONFIG_FILE] + \
        [layout.VALIDATION_FILE] * bool(f.validation) + [str(BENCH_FILE)] * bool(f.bench)
    body += ["", f"<sub>Written by distill/model_card.py from {', '.join(sources)}; every figure above is copied "
             "from those files.</sub>"]
    return "---\n" + yaml.safe_dump(front_matter(f), sort_keys=False, allow_unicode=True) + "---\n\n" + \
        "\n".join(body) + "\n"


def write_card(directory: str | Path, *, shown_as: str | None = None) -> Path:
    """Render and write ``directory``'s README.md (atomically); returns its path."""
    path = Path(directory) / CARD_FILE
    atomic_write_text(path, render_card(directory, shown_as=shown_as))
    return path


def refresh_cards(model_dir: str | Path, *, variants: bool = True) -> list[str]:
    """Rewrite the card of a PyTorch model folder and (``variants``) of each of its ONNX variants
    under ``<run>/onnx/<model>/``: what export and bench do once they have written their JSON. Each
    folder is written under its stage's lock (the model folder's, ``onnx/``'s); one that another
    stage holds is skipped, and the returned lines say so."""
    from distill.lock import StageLockedError, stage_lock

    model_dir = Path(model_dir)
    onnx_dir = onnx_model_dir(model_dir.parent, model_dir.name)
    groups = [(model_dir, [model_dir])]
    if variants:
        groups.append((onnx_dir.parent, [onnx_dir / v for v in VARIANTS if (onnx_dir / v / ONNX_FILE).is_file()]))
    notes = []
    for lock_dir, folders in groups:
        folders = [d for d in folders if (d / MODEL_INFO).is_file()]
        if not folders:
            continue
        try:
            with stage_lock(lock_dir):
                for folder in folders:
                    write_card(folder)
        except StageLockedError as err:
            notes.append(f"model card of {', '.join(map(str, folders))} not refreshed: {err}")
    return notes
