"""distill.config: --key=value overrides, typed conversion, JSON save/load, atomic writes."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest

from distill.config import (
    ConfigError,
    apply_overrides,
    atomic_write_text,
    config_from_dict,
    field_types,
    load_config,
    save_config,
)


@dataclass
class Toy:
    steps: int = 100  # an int
    lr: float = 1e-3  # a float
    name: str = "run"  # a str
    fp16: bool = False  # a bool
    max_rows: int | None = None  # an optional int
    layers: list[int] = field(default_factory=lambda: [0, 1])  # a list of ints
    note: str | None = "hi"  # an optional str


@dataclass(frozen=True)
class Frozen:
    a: int = 1
    b: tuple[int, ...] = (1, 2)


def test_field_types():
    types_ = field_types(Toy)
    assert types_["steps"] is int and types_["lr"] is float and types_["fp16"] is bool
    assert list(types_) == ["steps", "lr", "name", "fp16", "max_rows", "layers", "note"]


def test_no_overrides_is_an_equal_copy():
    base = Toy()
    out = apply_overrides(base, [])
    assert out == base and out is not base


def test_each_type_is_converted():
    out = apply_overrides(Toy(), [
        "--steps=250", "--lr=3e-5", "--name=kd=on", "--fp16=true", "--max_rows=64", "--layers=2,4,6",
    ])
    assert out.steps == 250 and type(out.steps) is int
    assert out.lr == pytest.approx(3e-5) and type(out.lr) is float
    assert out.name == "kd=on"  # only the first "=" splits key from value
    assert out.fp16 is True
    assert out.max_rows == 64
    assert out.layers == [2, 4, 6] and all(type(x) is int for x in out.layers)


def test_the_original_is_not_modified():
    base = Toy()
    apply_overrides(base, ["--steps=5", "--layers=9"])
    assert base.steps == 100 and base.layers == [0, 1]


def test_dashes_in_keys_become_underscores():
    assert apply_overrides(Toy(), ["--max-rows=7"]).max_rows == 7


def test_later_override_wins():
    assert apply_overrides(Toy(), ["--steps=1", "--steps=2"]).steps == 2


@pytest.mark.parametrize("raw,expected", [
    ("true", True), ("True", True), ("1", True), ("yes", True), ("on", True),
    ("false", False), ("FALSE", False), ("0", False), ("no", False), ("off", False),
])
def test_bool_spellings(raw, expected):
    start = Toy(fp16=not expected)
    assert apply_overrides(start, [f"--fp16={raw}"]).fp16 is expected


@pytest.mark.parametrize("raw", ["none", "None", "null", ""])
def test_optional_int_accepts_none(raw):
    assert apply_overrides(Toy(max_rows=5), [f"--max_rows={raw}"]).max_rows is None


def test_optional_str_none_and_value():
    assert apply_overrides(Toy(), ["--note=none"]).note is None
    assert apply_overrides(Toy(note=None), ["--note=hello world"]).note == "hello world"


def test_list_edge_cases():
    assert apply_overrides(Toy(), ["--layers="]).layers == []
    assert apply_overrides(Toy(), ["--layers=3"]).layers == [3]
    assert apply_overrides(Toy(), ["--layers=1,,2,"]).layers == [1, 2]


def test_frozen_dataclass_and_tuple_field():
    out = apply_overrides(Frozen(), ["--a=3", "--b=4,5"])
    assert out == Frozen(a=3, b=(4, 5))
    assert isinstance(out.b, tuple)


def test_unknown_key_lists_known_keys():
    with pytest.raises(ConfigError) as info:
        apply_overrides(Toy(), ["--stpes=5"])
    message = str(info.value)
    assert "'stpes'" in message
    assert "known keys: fp16, layers, lr, max_rows, name, note, steps" in message


@pytest.mark.parametrize("item,fragments", [
    ("--steps=ten", ["--steps", "expected int", "'ten'"]),
    ("--steps=1.5", ["--steps", "expected int", "'1.5'"]),
    ("--steps=", ["--steps", "expected int"]),
    ("--lr=fast", ["--lr", "expected float", "'fast'"]),
    ("--fp16=maybe", ["--fp16", "expected true or false", "'maybe'"]),
    ("--fp16=2", ["--fp16", "expected true or false"]),
    ("--max_rows=many", ["--max_rows", "expected int", "'many'"]),
    ("--layers=1,two,3", ["--layers", "expected int", "'two'"]),
])
def test_bad_values_are_rejected(item, fragments):
    with pytest.raises(ConfigError) as info:
        apply_overrides(Toy(), [item])
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.parametrize("item", ["steps=5", "-steps=5", "--steps", "steps", "", "--"])
def test_malformed_items_are_rejected(item):
    with pytest.raises(ConfigError, match="expected --key=value") as info:
        apply_overrides(Toy(), [item])
    assert repr(item) in str(info.value)


def test_a_bad_item_rejects_the_whole_list():
    base = Toy()
    with pytest.raises(ConfigError):
        apply_overrides(base, ["--steps=5", "--nope=1"])
    assert base.steps == 100


def test_unsupported_annotation_is_a_config_error():
    @dataclass
    class WithDict:
        table: dict = field(default_factory=dict)

    with pytest.raises(ConfigError, match="--table: cannot parse"):
        apply_overrides(WithDict(), ["--table=a"])


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# ------------------------------------------------------------------------------------ save / load


def test_save_load_round_trip(tmp_path):
    config = Toy(steps=7, lr=0.5, name="ü名", fp16=True, max_rows=None, layers=[3, 1], note=None)
    path = tmp_path / "sub" / "config.json"  # the parent is created
    save_config(config, path)
    assert load_config(Toy, path) == config
    on_disk = json.loads(path.read_bytes().decode("utf-8"))  # UTF-8 whatever the locale
    assert on_disk == dataclasses.asdict(config)
    assert list(on_disk) == sorted(on_disk)
    assert path.read_text(encoding="utf-8").endswith("}\n")


def test_round_trip_after_overrides(tmp_path):
    config = apply_overrides(Toy(), ["--steps=9", "--layers=4,5", "--max-rows=12"])
    save_config(config, tmp_path / "c.json")
    assert load_config(Toy, tmp_path / "c.json") == config


def test_save_overwrites(tmp_path):
    path = tmp_path / "c.json"
    save_config(Toy(steps=1), path)
    save_config(Toy(steps=2), path)
    assert load_config(Toy, path).steps == 2


def test_partial_file_takes_defaults(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"steps": 3}', encoding="utf-8")
    assert load_config(Toy, path) == Toy(steps=3)


def test_unknown_key_in_file_is_rejected(tmp_path):
    path = tmp_path / "c.json"
    values = dataclasses.asdict(Toy())
    values["learning_rate"] = 0.1
    values["zzz"] = 1
    path.write_text(json.dumps(values), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(Toy, path)
    message = str(info.value)
    assert str(path) in message
    assert "unknown config keys ['learning_rate', 'zzz']" in message


def test_config_from_dict_names_its_source():
    with pytest.raises(ConfigError, match="^somewhere: unknown config keys"):
        config_from_dict(Toy, {"bogus": 1}, "somewhere")
    assert config_from_dict(Toy, {"lr": 0.25}, "x") == Toy(lr=0.25)


# ------------------------------------------------------------------------------------ atomic write


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "out" / "file.txt"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second\n")
    assert path.read_text(encoding="utf-8") == "second\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.txt"]


def test_atomic_write_failure_leaves_no_temp_file_and_keeps_old_content(tmp_path):
    path = tmp_path / "file.txt"
    atomic_write_text(path, "old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "bad \ud800 surrogate")
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_atomic_write_onto_a_directory_fails_cleanly(tmp_path):
    target = tmp_path / "dir"
    target.mkdir()
    with pytest.raises(OSError):
        atomic_write_text(target, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]
    assert list(target.iterdir()) == []


def test_atomic_write_is_utf8(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "naïve — 日本")
    assert path.read_bytes() == "naïve — 日本".encode()
