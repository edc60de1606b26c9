"""The lm task end to end on a generated corpus and a tiny random llama built offline (a BPE
tokenizer trained on the corpus, 2 blocks of width 32): text sources, the split by document and
its duplicate / overlap counts, block packing and the token store, the sparse targets (top-k and
sampled) against the full distribution, the cache's resume and stale / corrupt refusal, the
teacher and student stages through the command line, the students' layers and KV cache."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.cache import CacheError
from distill.lm_cache import (
    TargetCache,
    TargetSpec,
    bytes_per_token,
    open_targets,
    record_dtype,
    sparse_targets,
)
from distill.lm_data import LMDataError, LMDataSpec, load_lm_data, pack, read_documents, split_documents

WORDS = ("the film was good bad long short story actor scene plot music dark light funny sad great "
         "slow fast ending start camera script hero villain love war city night day").split()


def generated_documents(n: int, seed: int = 0) -> list[str]:
    """``n`` documents of 2-6 sentences from a small grammar (a few exact duplicates included)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + "."
                     for _ in range(rng.randint(2, 6))]
        docs.append(" ".join(sentences))
    docs[5] = docs[3]  # exact duplicates (whitespace and case differ in one)
    docs[9] = "  " + docs[3].upper() + " "
    return docs


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lm_corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in generated_documents(40)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, corpus) -> Path:
    """A random 2-block llama (width 32, tied embeddings) with a BPE tokenizer trained on the corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny_llama")
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(config).save_pretrained(out)
    return out



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster than two on a shared 2-core machine (no spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# ---- data ------------------------------------------------------------------------------------------


def test_sources_folder_jsonl_tsv_csv(tmp_path):
    docs = ["first document", "second one\nwith two lines", "third"]
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"{i}.txt").write_text(d, encoding="utf-8")
    (folder / "empty.txt").write_text("  \n", encoding="utf-8")
    assert read_documents(LMDataSpec(path=str(folder)))[0] == [docs[0], docs[1], docs[2]]
    assert read_documents(LMDataSpec(path=str(folder)))[2] == 1  # the empty file, skipped and counted
    (tmp_path / "t.tsv").write_text("id\tbody\n1\tfirst document\n2\tthird\n", encoding="utf-8")
    assert read_documents(LMDataSpec(path=str(tmp_path / "t.tsv"), text_column="body"))[0] == ["first document", "third"]
    (tmp_path / "t.csv").write_text('text,label\n"a, b",1\nc,0\n', encoding="utf-8")
    assert read_documents(LMDataSpec(path=str(tmp_path / "t.csv")))[0] == ["a, b", "c"]


def test_line_separators_inside_a_document_do_not_split_it(tmp_path):
    # U+2028, U+0085 and \x0c are line breaks to str.splitlines, not to a JSONL/TSV/text file
    doc = "before\u2028after\u0085end\x0cform"
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": doc}, ensure_ascii=False) + "\n" + '{"text": "two"}\n',
                                      encoding="utf-8")
    assert read_documents(LMDataSpec(path=str(tmp_path / "d.jsonl")))[0] == [doc, "two"]
    (tmp_path / "d.tsv").write_text(f"text\tlabel\r\n{doc}\t1\r\ntwo\t0\r\n", encoding="utf-8", newline="")
    assert read_documents(LMDataSpec(path=str(tmp_path / "d.tsv")))[0] == [doc, "two"]
    (tmp_path / "d.txt").write_text(f"{doc}\r\ntwo\n", encoding="utf-8", newline="")
    assert read_documents(LMDataSpec(path=str(tmp_path / "d.txt")))[0] == [doc, "two"]


def test_bad_sources_are_one_line_errors(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(LMDataError, match=r"bad.jsonl, line 2: not valid JSON"):
        read_documents(LMDataSpec(path=str(tmp_path / "bad.jsonl")))
    (tmp_path / "t.tsv").write_text("body\nx\n", encoding="utf-8")
    with pytest.raises(LMDataError, match=r"t.tsv, line 1: no column 'text'"):
        read_documents(LMDataSpec(path=str(tmp_path / "t.tsv")))
    with pytest.raises(LMDataError, match="no such file"):
        read_documents(LMDataSpec(path=str(tmp_path / "missing")))


def test_split_by_document_counts_duplicates_and_overlap():
    docs = generated_documents(80)
    split = split_documents(docs, LMDataSpec(path="x", heldout_fraction=0.2, seed=1))
    normal = lambda t: " ".join(t.split()).lower()  # noqa: E731
    train = {normal(d) for d in split.train}
    assert not [d for d in split.heldout if normal(d) in train]  # no held-out text is a training text
    r = split.report
    # the three copies of docs[3] are either all in train (2 duplicates) or split (the held-out ones dropped)
    assert r["train_duplicates"] + r["heldout_overlap_dropped"] == 2
    assert r["train_documents"] + r["heldout_documents"] + r["heldout_overlap_dropped"] == 80
    deduped = split_documents(docs, LMDataSpec(path="x", heldout_fraction=0.2, seed=1, dedupe=True))
    assert len(deduped.train) == len(split.train) - r["train_duplicates"]


def test_pack_puts_a_separator_after_each_document(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    docs = ["the film was good", "bad ending", "the hero"]
    blocks, dropped = pack(tok, docs, block_length=4, separator=0)
    flat = [t for d in docs for t in tok(d, add_special_tokens=False).input_ids + [0]]
    assert blocks.shape == (len(flat) // 4, 4) and dropped == len(flat) % 4
    assert blocks.reshape(-1).tolist() == flat[: blocks.size]


def test_store_is_reused_and_rebuilt(tiny_llama, corpus, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    spec = LMDataSpec(path=str(corpus), block_length=16, heldout_fraction=0.2)
    first = load_lm_data(spec, tok, tmp_path / "tokens")
    stamp = (tmp_path / "tokens" / "train" / "ids.bin").stat().st_mtime_ns
    again = load_lm_data(spec, tok, tmp_path / "tokens")
    assert (tmp_path / "tokens" / "train" / "ids.bin").stat().st_mtime_ns == stamp
    assert np.array_equal(first.train.blocks, again.train.blocks)
    longer = load_lm_data(LMDataSpec(path=str(corpus), block_length=24, heldout_fraction=0.2), tok, tmp_path / "tokens")
    assert longer.train.blocks.shape[1] == 24
    assert first.report["train_blocks"] == len(first.train) > 0 and first.report["heldout_blocks"] > 0


# ---- sparse targets -----------------------------------------------------------------------------------


def test_topk_records_hold_the_top_k_and_the_exact_tail():
    logits = torch.randn(5, 200) * 3
    rec = sparse_targets(logits, TargetSpec(rule="topk", k=8, temperature=2.0))
    p = torch.softmax(logits / 2.0, dim=-1).double()
    top = p.topk(8, dim=-1)
    assert rec.dtype.itemsize == bytes_per_token(8) == 52
    assert np.array_equal(rec["ids"], top.indices.numpy())
    np.testing.assert_allclose(np.exp(rec["values"].astype(np.float64)), top.values.numpy(), rtol=1e-3)
    np.testing.assert_allclose(rec["tail"], 1 - top.values.sum(-1).numpy(), rtol=1e-5)


def test_sampled_records_estimate_the_distribution_without_bias():
    logits = torch.randn(1, 12) * 1.5
    p = torch.softmax(logits, dim=-1)[0].numpy()
    spec = TargetSpec(rule="sample", k=12)
    total = np.zeros(12)
    for draw in range(400):
        rec = sparse_targets(logits, spec, generator=torch.Generator().manual_seed(draw))[0]
        present = rec["ids"] >= 0
        assert rec["tail"] == 0 and len(set(rec["ids"][present])) == present.sum()
        np.add.at(total, rec["ids"][present], np.exp(rec["values"][present].astype(np.float64)))
    np.testing.assert_allclose(total / 400, p, atol=0.02)  # the mean of 400 weight vectors: the teacher


# ---- the stages --------------------------------------------------------------------------------------


def teacher_args(run_dir: Path, corpus: Path, model: Path, *extra: str) -> list[str]:
    return ["--task=lm", "--data", str(corpus), "--run-dir", str(run_dir), f"--base_model={model}", "--block_length=16",
            "--heldout_fraction=0.2", "--target_k=5", "--cache_chunk_rows=32", "--check_blocks=2",
            "--check_new_tokens=4", "--check_prompts=the film", "--batch_size=8", *extra]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, corpus, tiny_llama) -> Path:
    from teachers.finetune import main

    run_dir = tmp_path_factory.mktemp("lm_run")
    assert main(teacher_args(run_dir, corpus, tiny_llama)) == 0
    return run_dir


def test_teacher_stage_writes_targets_and_its_check(teacher_run):
    teacher = teacher_run / "teacher"
    metrics = json.loads((teacher / "metrics.json").read_text())
    assert metrics["task"] == "lm" and metrics["cache"]["train"]["bytes_per_token"] == 6 * 5 + 4
    assert 1 < metrics["check"]["heldout_perplexity"] < 10 * metrics["vocab_size"]
    assert metrics["check"]["continuations"][0]["prompt"] == "the film"
    info = json.loads((teacher / "distill.json").read_text())
    assert info["task"] == "lm" and info["architecture"]["targets"]["k"] == 5
    assert "pipeline_tag: text-generation" in (teacher / "README.md").read_text()  # its card (distill/lm_card.py)


def test_cached_targets_are_the_teachers(teacher_run):
    """The record of a position is what the teacher's own logits give on that block."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = teacher_run / "teacher"
    tok = AutoTokenizer.from_pretrained(teacher)
    spec = LMDataSpec(**json.loads((teacher / "distill.json").read_text())["data"])
    data = load_lm_data(spec, tok, teacher / "tokens")
    targets = open_targets(TargetCache(teacher_dir=teacher, name="train", store=data.train, data_files=data.files,
                                       spec=TargetSpec(k=5)))
    model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(np.asarray(data.train.blocks[3:4], dtype=np.int64))).logits[0, :-1]
    want = sparse_targets(logits, TargetSpec(k=5))
    ids, values, tail = targets.batch(np.array([3]))
    assert np.array_equal(ids[0], want["ids"])
    np.testing.assert_allclose(tail[0], want["tail"], rtol=1e-5)


def test_stale_and_corrupted_targets_are_refused(teacher_run, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    teacher = teacher_run / "teacher"
    tok = AutoTokenizer.from_pretrained(teacher)
    spec = LMDataSpec(**json.loads((teacher / "distill.json").read_text())["data"])
    data = load_lm_data(spec, tok, teacher / "tokens")
    with pytest.raises(CacheError, match="stale logit cache.*targets"):
        open_targets(TargetCache(teacher_dir=teacher, name="train", store=data.train, data_files=data.files,
                                 spec=TargetSpec(k=5, rule="sample")))
    copy = tmp_path / "teacher"
    shutil.copytree(teacher, copy)
    with open(copy / "logits" / "train.npy", "r+b") as handle:
        handle.seek(-3, 2)
        handle.write(b"\xff\xff\xff")
    with pytest.raises(CacheError, match="corrupted"):
        open_targets(TargetCache(teacher_dir=copy, name="train", store=data.train, data_files=data.files,
                                 spec=TargetSpec(k=5)))


def test_a_reused_teacher_records_the_targets_it_scores_now(teacher_run, corpus, tiny_llama, tmp_path):
    """Rerun with another k: the saved teacher is reused, its cache rescored, and distill.json (what the
    students open the cache with) says the new k, so the new cache opens and is not refused as stale."""
    import shutil

    from transformers import AutoTokenizer

    from teachers.finetune import main

    shutil.copytree(teacher_run / "teacher", tmp_path / "teacher")
    assert main(teacher_args(tmp_path, corpus, tiny_llama, "--target_k=3")) == 0
    teacher = tmp_path / "teacher"
    info = json.loads((teacher / "distill.json").read_text())
    assert info["architecture"]["targets"]["k"] == 3
    spec = LMDataSpec(**info["data"])
    data = load_lm_data(spec, AutoTokenizer.from_pretrained(teacher), teacher / "tokens")
    targets = open_targets(TargetCache(teacher_dir=teacher, name="train", store=data.train, data_files=data.files,
                                       spec=TargetSpec(**info["architecture"]["targets"])))
    assert targets.batch(np.array([0]))[0].shape[-1] == 3


def test_an_interrupted_cache_resumes_to_the_same_bytes(teacher_run, corpus, tiny_llama, tmp_path):
    from teachers.finetune import main

    main(teacher_args(tmp_path, corpus, tiny_llama, "--cache_max_chunks=1"))
    assert not (tmp_path / "teacher" / "logits" / "train.npy").exists()  # unfinished: only the .partial
    main(teacher_args(tmp_path, corpus, tiny_llama))
    got = (tmp_path / "teacher" / "logits" / "train.npy").read_bytes()
    assert got == (teacher_run / "teacher" / "logits" / "train.npy").read_bytes()


def test_student_stage_kd_and_ce_control(teacher_run):
    from students.distill import main

    args = ["--run-dir", str(teacher_run), "--max_train_blocks=48", "--fresh_hidden=16", "--fresh_layers=1", "--fresh_heads=2",
            "--fresh_kv_heads=1", "--batch_size=4", "--select_blocks=2", "--progress=false", "--position_chunk=7"]
    assert main(args) == 0
    kd = json.loads((teacher_run / "student" / "metrics.json").read_text())
    ce = json.loads((teacher_run / "student_ce" / "metrics.json").read_text())
    assert kd["tokens_seen"] == ce["tokens_seen"] > 0 and kd["w_kd"] == 0.5 and ce["w_kd"] == 0.0
    assert "kd" in kd["history"][-1] and "kd" not in ce["history"][-1]
    assert 0 <= kd["teacher_top1_agreement"] <= 1 and kd["heldout_perplexity"] > 1
    assert "KD against CE-only" in (teacher_run / "report.md").read_text()
    assert (teacher_run / "student" / "README.md").is_file() and (teacher_run / "student_ce" / "README.md").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(teacher_run / "student")  # an ordinary HF causal LM folder


def test_student_refuses_another_temperature(teacher_run):
    from distill.config import ConfigError
    from students.distill import main

    with pytest.raises(ConfigError, match="cached at T = 1.0"):
        main(["--run-dir", str(teacher_run), "--temperature=2", "--student_ce=false"])


def test_subset_student_keeps_evenly_spaced_blocks_and_a_working_kv_cache(teacher_run):
    from students.lm import LMStudentConfig, build_lm_student

    model, description = build_lm_student(LMStudentConfig(student="subset", keep_layers=1), teacher_run / "teacher")
    assert description == {"kind": "subset", "layers_kept": [1], "teacher_layers": 2}
    assert model.config.num_hidden_layers == 1 and model.model.layers[0].self_attn.layer_idx == 0
    model.eval()
    ids = torch.tensor([[5, 17, 40, 9, 33]])
    with torch.no_grad():
        full = model(input_ids=ids).logits[0, -1]
        first = model(input_ids=ids[:, :-1], use_cache=True)
        step = model(input_ids=ids[:, -1:], past_key_values=first.past_key_values).logits[0, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


def test_record_layout():
    assert record_dtype(32).itemsize == 196 and bytes_per_token(40) == 244


def student_args(run_dir: Path, *extra: str) -> list[str]:
    return ["--run-dir", str(run_dir), "--teacher_dir=" + str(run_dir / "teacher"), "--max_train_blocks=32",
            "--fresh_hidden=16", "--fresh_layers=1", "--fresh_heads=2", "--fresh_kv_heads=1", "--batch_size=4",
            "--select_blocks=2", "--progress=false", "--student_ce=false", "--save_every_steps=2", *extra]


def _weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(directory / "model.safetensors")


def test_an_interrupted_student_resumes_to_the_same_weights(teacher_run, tmp_path, monkeypatch):
    import shutil

    import students.lm as lm_student
    from students.distill import main

    for name in ("straight", "killed"):
        (tmp_path / name).mkdir()
        shutil.copytree(teacher_run / "teacher", tmp_path / name / "teacher", symlinks=True)
    assert main(student_args(tmp_path / "straight")) == 0
    real, calls = lm_student.lm_kd_loss, [0]

    def dies_at_step_5(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_student, "lm_kd_loss", dies_at_step_5)
    with pytest.raises(RuntimeError, match="killed"):
        main(student_args(tmp_path / "killed"))
    assert (tmp_path / "killed" / "student" / "checkpoint" / "state.json").is_file()
    monkeypatch.setattr(lm_student, "lm_kd_loss", real)
    assert main(student_args(tmp_path / "killed")) == 0
    a, b = _weights(tmp_path / "straight" / "student"), _weights(tmp_path / "killed" / "student")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(teacher_run, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        shutil.copytree(teacher_run / "teacher", tmp_path / name / "teacher", symlinks=True)
    one = subprocess.run([sys.executable, "-m", "distill", "distill", *student_args(tmp_path / "one")], cwd=root,
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stdout + one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "distill", "distill", *student_args(tmp_path / "two")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout + two.stderr
    ma = json.loads((tmp_path / "one" / "student" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "two" / "student" / "metrics.json").read_text())
    assert (ma["world_size"], mb["world_size"]) == (1, 2) and ma["steps_done"] == mb["steps_done"]
    a, b = _weights(tmp_path / "one" / "student"), _weights(tmp_path / "two" / "student")
    for key in a:  # the same updates; only the order of float sums differs
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=key)


# ---- export and bench ------------------------------------------------------------------------------

EXPORT_ARGS = ["--prefix_tokens=8", "--step_tokens=6", "--validate_blocks=2", "--threads=1"]


@pytest.fixture(scope="module")
def exported_run(teacher_run, tmp_path_factory) -> Path:
    """A copy of the teacher run with a student trained, then both exported (fp32 and int8)."""
    import shutil

    from distill.__main__ import main as cli
    from students.distill import main

    run_dir = tmp_path_factory.mktemp("lm_export")
    shutil.copytree(teacher_run / "teacher", run_dir / "teacher", symlinks=True)
    assert main(student_args(run_dir)) == 0
    # a random 2-block llama's next-token distributions are near-uniform: argmax near-ties flip under
    # int8, so its agreement bound is loosened here; the fp32 bounds are the export's own
    assert cli(["export", "--run-dir", str(run_dir), *EXPORT_ARGS, "--int8_min_agreement=0",
                "--int8_max_ppl_ratio=10"]) == 0
    return run_dir


def test_export_writes_validated_causal_lms_with_their_kv_cache(exported_run):
    from optimum.onnxruntime import ORTModelForCausalLM

    from distill.layout import REFERENCE, onnx_variant_dir, validation_path

    for model in ("teacher", "student"):
        report = json.loads(validation_path(exported_run, model).read_text())
        assert report["passed"] and report["installed"]
        fp32 = report["variants"]["fp32"]["figures"]
        assert fp32["full_max_abs_diff"] <= 1e-3 and fp32["cached_max_abs_diff"] <= 1e-3
        assert fp32["positions"] == 2 * 14 and fp32["perplexity"] == pytest.approx(report[REFERENCE]["perplexity"], rel=1e-4)
        for variant in ("fp32", "int8"):
            ort = ORTModelForCausalLM.from_pretrained(onnx_variant_dir(exported_run, model, variant), use_cache=True)
            ids = torch.tensor([[5, 17, 40, 9]])
            out = ort.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
            assert out.shape == (1, 7) and torch.equal(out[:, :4], ids)


def _card(path: Path) -> tuple[dict, str]:
    import yaml

    head, body = path.read_text().removeprefix("---\n").split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_each_exported_variant_has_a_card_with_its_checks(exported_run):
    from distill.layout import onnx_variant_dir, validation_path
    from export.lm_export import LMExportConfig

    for model in ("teacher", "student"):
        report = json.loads(validation_path(exported_run, model).read_text())
        for variant in ("fp32", "int8"):
            folder = onnx_variant_dir(exported_run, model, variant)
            meta, body = _card(folder / "README.md")
            assert meta["library_name"] == "onnxruntime" and meta["base_model"] == str(exported_run / model)
            [result] = meta["model-index"][0]["results"]
            assert result["metrics"][0]["value"] == report["variants"][variant]["figures"]["perplexity"]
            assert f'ORTModelForCausalLM.from_pretrained("{folder}", use_cache=True)' in body  # installed, not staging
            assert "staging" not in body and "installed only after every check" in body
            for check in report["variants"][variant]["checks"]:
                assert f"| {check['name']} |" in body
            figure = report["variants"][variant]["figures"]["full_max_abs_diff"]
            assert variant == "int8" or f"| full_max_abs_diff | max |Δlogit| against PyTorch, one full forward | {figure:.4g} | 0.001 | yes |" in body
            assert (f"**{LMExportConfig().int8_target}**" in body) == (variant == "int8")  # its target, from quantization.json


def test_a_failed_check_installs_nothing_and_names_the_check(exported_run, tmp_path, capsys):
    import shutil

    from distill.__main__ import main as cli
    from distill.layout import onnx_model_dir

    run_dir = tmp_path / "run"
    shutil.copytree(exported_run / "teacher", run_dir / "teacher", symlinks=True)
    assert cli(["export", "--run-dir", str(run_dir), *EXPORT_ARGS, "--fp32_max_abs_diff=-1"]) != 0
    err = capsys.readouterr().err
    assert "teacher/fp32 full_max_abs_diff" in err and "teacher/fp32 cached_max_abs_diff" in err  # every failure
    assert not onnx_model_dir(run_dir, "teacher").exists()
    failed = onnx_model_dir(run_dir, "teacher").parent / "teacher.failed"
    assert (failed / "validation.json").is_file()
    assert "not installed: it failed the checks below" in (failed / "fp32" / "README.md").read_text()


def test_a_second_export_of_the_same_run_is_refused(exported_run, tmp_path, capsys):
    import shutil

    from distill.__main__ import main as cli
    from distill.layout import onnx_root
    from distill.lock import stage_lock

    run_dir = tmp_path / "run"
    shutil.copytree(exported_run / "teacher", run_dir / "teacher", symlinks=True)
    with stage_lock(onnx_root(run_dir)):  # the first export, still running
        assert cli(["export", "--run-dir", str(run_dir), *EXPORT_ARGS]) != 0
    assert "in use by" in capsys.readouterr().err
    assert not (onnx_root(run_dir) / "teacher").exists()


def test_bench_times_every_model_and_variant_against_the_teacher(exported_run):
    from distill.layout import BENCH_FP32, BENCH_INT8, BENCH_PYTORCH
    from export.lm_bench import main as bench

    assert bench(["--run-dir", str(exported_run), "--threads=1", "--prompts=2", "--warmup=1", "--prompt_tokens=8",
                  "--new_tokens=3"]) == 0
    result = json.loads((exported_run / "bench" / "bench.json").read_text())
    rows = {(r["model"], r["variant"]): r for r in result["rows"]}
    assert set(rows) == {(m, v) for m in ("teacher", "student") for v in (BENCH_PYTORCH, BENCH_FP32, BENCH_INT8)}
    assert rows[("teacher", BENCH_PYTORCH)]["gen_speedup_vs_teacher_pytorch"] == 1.0
    for r in rows.values():
        assert r["generated_tokens_per_s"] > 0 and r["prompt_tokens_per_s"] > 0 and len(r["first_generated"]) == 3
        teacher = rows[("teacher", r["variant"])]["generated_tokens_per_s"]
        assert r["gen_speedup_vs_teacher_same_variant"] == pytest.approx(r["generated_tokens_per_s"] / teacher)
    # the same greedy loop in both runtimes: ORT fp32 generates PyTorch's tokens (the trained student's
    # top tokens are far apart; the random teacher's near-uniform ones are not compared)
    assert rows[("student", BENCH_FP32)]["first_generated"] == rows[("student", BENCH_PYTORCH)]["first_generated"]
    assert "| student | ort_int8 |" in (exported_run / "bench" / "bench.md").read_text()
    from distill.layout import onnx_variant_dir

    _, body = _card(onnx_variant_dir(exported_run, "student", "int8") / "README.md")  # rewritten by the bench
    assert "## Generation speed (`make bench`)" in body
    assert f"| {rows[('student', BENCH_INT8)]['generated_tokens_per_s']:,.1f} |" in body
