"""The stages share files, not classes: read every module's imports and check who imports whom.

The layout shows the architecture: teachers/, students/ and export/ hold the stages, distill/ the
library they share, experiments/ the drivers that run stages as subprocesses
(``distill.procs.run_stage``) and gather their outputs. A stage never imports an experiment; an
experiment drives stages through subprocesses (it may read their configs and presets)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "teachers", "students", "export", "experiments")
STAGES = ("distill", "teachers", "students", "export")


def project_imports() -> dict[str, set[str]]:
    """module name -> the project modules it imports (anywhere in the file, lazily or not)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            module = f"{package}.{path.stem}" if path.stem != "__init__" else package
            found: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
                found |= {n for n in names if n.split(".")[0] in PACKAGES}
            graph[module] = found
    return graph


def test_the_import_graph_is_read():
    graph = project_imports()
    assert "students.distill" in graph and "distill.trainer" in graph["students.distill"]
    assert len(graph) > 20


def test_stages_do_not_import_each_other():
    graph = project_imports()
    for module, imports in graph.items():
        top = module.split(".")[0]
        if top == "teachers":
            assert not [m for m in imports if m.startswith("students")], module
        if top == "students":
            assert not [m for m in imports if m.startswith("teachers")], module
        if top == "export":
            assert not [m for m in imports if m.startswith(("students", "teachers"))], module
        if top == "distill" and module != "distill.__main__":  # the library serves every stage
            assert not [m for m in imports if m.startswith(("students", "teachers", "export"))], module


def test_stages_do_not_import_experiments():
    graph = project_imports()
    assert {"experiments.strategies", "experiments.compare", "experiments.gap"} <= set(graph)
    for module, imports in graph.items():
        if module.split(".")[0] in STAGES and module != "distill.__main__":  # the CLI names every command
            assert not [m for m in imports if m.startswith("experiments")], module


def test_experiments_drive_stages_through_subprocesses():
    graph = project_imports()
    drivers = [m for m in graph if m.startswith("experiments.")]
    assert drivers
    for module in drivers:
        assert "distill.procs" in graph[module], f"{module} does not run its stages through distill.procs"
    for path in sorted((ROOT / "experiments").glob("*.py")):  # configs and presets, never a stage's main()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in STAGES:
                assert "main" not in [a.name for a in node.names], f"{path.name} imports {node.module}.main"
    assert not [f for f in (ROOT / "teachers").glob("*.py") if f.stem in ("strategies",)]
    assert not [f for f in (ROOT / "students").glob("*.py") if f.stem in ("compare", "gap")]


def test_no_import_cycles():
    imports = project_imports()
    graph = {m: {i for i in targets if i in imports} for m, targets in imports.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph.get(module, ()):
            assert state.get(target) != 1, "import cycle: " + " -> ".join(path + [module, target])
            if state.get(target) is None:
                visit(target, path + [module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_the_kernel_does_not_import_the_reference():
    graph = project_imports()
    assert "distill.losses" not in graph["distill.kd_loss_triton"]
    assert "distill.kd_defaults" in graph["distill.kd_loss_triton"] and "distill.kd_defaults" in graph["distill.losses"]


def test_the_run_layout_is_spelt_in_one_place():
    """Stage folders, the ONNX folder, bench's variant names and the JSON files a model folder holds
    come from distill/layout.py; no module rebuilds them by hand (``run_dir / "teacher"``,
    ``... / "onnx" / model``, ``"ort_int8"``, ``out / "metrics.json"``)."""
    import re

    by_hand = re.compile(r'/ "(teacher|student|student_ce|onnx|logits|bench)"(?!\w)|"(pytorch_fp32|ort_fp32_o2|ort_int8|ort_fp32)"'
                         r'|/ "(metrics|train_config|distill|validation)\.json"')
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            if path.name == "layout.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if by_hand.search(line) and "store /" not in line:  # store / "teacher": a token store, not a stage
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
