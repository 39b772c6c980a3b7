"""The layering of docs/design.md ("Architecture"), checked on the source: which package may
import which, no import circles, and no references to design notes outside the repository."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# Lower layers never import higher ones (a module may import its own layer or any lower one).
LAYERS = [
    {"errors", "provenance", "code_deps"},
    {"storage", "report", "sim"},
    {"experts", "perception", "features"},
    {"policies"},
    {"config"},
    {"evaluation"},
    {"stages", "doctor", "dvc_stages", "dvc_pull"},
    {"cli", "__main__"},
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module → kubm modules it imports (module level and inside functions alike)."""
    modules = {_module(p): p for p in (SRC / "kubm").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kubm":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "kubm"}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kubm"


def test_every_package_has_a_layer():
    assert {_package(m) for m in import_graph()} - {"kubm"} <= set(RANK)


def test_no_module_imports_a_higher_layer():
    bad = [f"{m} -> {d}" for m, deps in import_graph().items() for d in deps
           if _package(m) in RANK and _package(d) in RANK and RANK[_package(d)] > RANK[_package(m)]]
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_only_the_cli_and_stages_import_stages():
    bad = [m for m, deps in import_graph().items()
           if any(d.startswith("kubm.stages") or d == "kubm.cli" for d in deps)
           and not (m.startswith("kubm.stages") or m in ("kubm.cli", "kubm.__main__"))]
    assert not bad


def test_no_import_circle():
    graph = import_graph()
    state: dict[str, int] = {}
    circles = []

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                circles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, circles


def test_the_check_itself_catches_a_violation(tmp_path, monkeypatch):
    """A planted upward import is reported (so the checks above can fail)."""
    bad = SRC / "kubm" / "sim" / "_planted_violation.py"
    bad.write_text("from kubm.stages.fit import fit\n")
    try:
        assert any(m == "kubm.sim._planted_violation" for m, deps in import_graph().items()
                   if "kubm.stages.fit" in deps)
        try:
            test_no_module_imports_a_higher_layer()
        except AssertionError as e:
            assert "kubm.sim._planted_violation -> kubm.stages.fit" in str(e)
        else:
            raise AssertionError("the layering check missed a planted violation")
    finally:
        bad.unlink()


def test_no_reference_to_design_notes_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"DESIGN(\.md| §)|(?<![\w/])notes/|\.\./shared")
    hits = []
    for f in files:
        p = ROOT / f
        if p.suffix not in {".py", ".md", ".yaml", ".yml", ".smk", ".json", ".toml", ".cfg", ".txt", ""} or not p.is_file():
            continue
        if f == "tests/test_architecture.py":
            continue
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{f}:{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert not hits, "\n".join(hits)
