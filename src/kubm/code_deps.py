"""The source files one `kubm` command can run: the static import closure of its module.

DVC stages depend on these files instead of all of ``src/kubm``, so a commit that touches
the evaluation code does not dirty the collect stage. Imports are read with ``ast`` (also
those inside functions, which the CLI uses to stay fast); a string constant naming a kubm
module (the method registry's import paths) counts as an import too.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

PACKAGE = "kubm"
_MODULE_STRING = re.compile(r"^kubm(\.\w+)+(:\w+)?$")


def _package_root() -> Path:
    return Path(__file__).resolve().parent


def module_file(module: str) -> Path | None:
    """The file of a ``kubm.*`` module (a package's ``__init__.py``), or None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = _package_root().joinpath(*parts[1:])
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(_package_root().parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@lru_cache(maxsize=None)
def _imports(path: Path) -> set[str]:
    tree = _tree(path)
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            found.add(node.value.split(":")[0])
    # a module imports its parent packages' __init__ too
    for name in list(found):
        parts = name.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return {m for m in found if m.split(".")[0] == PACKAGE}


@lru_cache(maxsize=None)
def closure(module: str) -> tuple[Path, ...]:
    """Every package file reachable from ``module`` by imports, sorted."""
    start = module_file(module)
    if start is None:
        raise ValueError(f"{module!r} is not a module of the {PACKAGE} package")
    seen, todo = {start}, [start]
    while todo:
        for name in _imports(todo.pop()):
            f = module_file(name)
            if f is not None and f not in seen:
                seen.add(f)
                todo.append(f)
    return tuple(sorted(seen))


def _command_function(command: str) -> ast.FunctionDef:
    """The function in kubm/cli.py behind one ``kubm`` command."""
    cli = module_file(f"{PACKAGE}.cli")
    for node in _tree(cli).body:
        if isinstance(node, ast.FunctionDef) and _command_name(node) == command:
            return node
    raise ValueError(f"`kubm {command}` is not a command of {cli}")


def _command_name(fn: ast.FunctionDef) -> str | None:
    for dec in fn.decorator_list:
        if isinstance(dec, ast.Call) and getattr(dec.func, "attr", None) == "command":
            named = [a.value for a in dec.args if isinstance(a, ast.Constant)]
            return named[0] if named else fn.name.replace("_", "-")
    return None


@lru_cache(maxsize=None)
def command_files(command: str, root: Path) -> tuple[str, ...]:
    """Source files (relative to ``root``) that ``kubm <command>`` can run: the CLI module's
    top-level closure plus the closure of what the command's function imports."""
    cli = module_file(f"{PACKAGE}.cli")
    modules = _top_level_imports(_tree(cli)) | _function_imports(_command_function(command))
    files = {cli, *(f for m in modules for f in closure(m))}
    return tuple(sorted(str(f.relative_to(root.resolve())) for f in files))


def _top_level_imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith(PACKAGE)}
    return {n for n in names if module_file(n)}


def _function_imports(fn: ast.FunctionDef) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if module_file(n)}
