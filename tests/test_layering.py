"""The package's layers point one way: no module imports a layer above its own
(docs/architecture.md).

Every `import` and `from ... import` in agi/consent_ivr — at the top, inside functions and under
TYPE_CHECKING alike — is read with `ast`, and each one into the package must go to the module's
own layer or a lower one. Only the process-AGI start path may defer imports into functions.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agi" / "consent_ivr"

#: Lowest first. A module may import its own layer and those before it; `harness` (the simulated
#: Asterisk) may import only the base: it must not know the engine it tests.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("records", "paths", "envfile", "logs", "osthreads", "wav", "__init__"),
    ("flow",),
    ("engine",),
    ("lint",),
    ("protocol",),
    ("evidence",),
    ("tracking",),
    ("transports",),
    ("install",),
    ("cli",),
)
HARNESS_MAY_IMPORT = frozenset(LAYERS[0]) | {"harness"}

#: The modules that run before the first prompt of a process-AGI call: only they may import inside
#: functions (to keep the caller's dead air short; tests/test_agi_start.py measures the path).
START_PATH = frozenset(
    {
        "transports/process_agi.py",
        "transports/pyst2.py",
        "transports/consent_agi.py",
        "transports/runner.py",
        "transports/flowcache.py",
        "protocol/codec.py",
        "protocol/session.py",
        "flow/model.py",
        "flow/diagnostics.py",
        "flow/audiofiles.py",
        "evidence/facts.py",
        "evidence/pseudonym.py",
        "engine.py",
        "engine/__init__.py",
        "engine/events.py",
        "engine/call.py",
        "records.py",
        "paths.py",
        "envfile.py",
        "logs.py",
    }
)


def top(module: str) -> str:
    """`consent_ivr.flow.loader` -> `flow`; `consent_ivr.paths` -> `paths`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(name: str) -> int:
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in tests/test_layering.py")


def is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module.startswith("consent_ivr"):
                    if child.module == "consent_ivr":  # a sub-module, or a name of the package
                        out.extend(
                            (f"consent_ivr.{a.name}" if is_module(a.name) else "consent_ivr",
                             child.lineno, nested)
                            for a in child.names
                        )  # fmt: skip
                    else:
                        out.append((child.module, child.lineno, nested))
            elif isinstance(child, ast.Import):
                out.extend(
                    (a.name, child.lineno, nested)
                    for a in child.names
                    if a.name.startswith("consent_ivr.")
                )
            visit(child, nested)

    visit(tree, False)
    return out


def own_layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if rel.parts else "__init__"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_its_own(path: Path) -> None:
    mine = own_layer(path)
    wrong = []
    for module, line, _nested in imports(path):
        theirs = top(module)
        if mine == "harness":
            if theirs not in HARNESS_MAY_IMPORT:
                wrong.append(f"line {line}: {module} (the harness imports only the base)")
        elif theirs != "harness" and layer_of(theirs) > layer_of(mine):
            wrong.append(f"line {line}: {module} is a layer above {mine}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_process_agi_start_path_imports_inside_functions(path: Path) -> None:
    rel = str(path.relative_to(PACKAGE))
    if rel in START_PATH:
        return
    deferred = [f"line {line}: {module}" for module, line, nested in imports(path) if nested]
    assert not deferred, f"{rel} imports inside functions:\n" + "\n".join(deferred)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from consent_ivr.cli.main import main\n", encoding="utf-8")
    assert imports(bad) == [("consent_ivr.cli.main", 2, True)]
    assert layer_of(top("consent_ivr.cli.main")) > layer_of("flow")


def test_every_module_over_400_lines_is_named_with_its_reason_in_the_architecture_page() -> None:
    """docs/architecture.md lists the modules over about 400 lines and why; a module that grows
    past 420 without being listed fails here (split it, or say why it is one room)."""
    page = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = page.split("## Modules over 400 lines", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\* `([^`]+\.py)`", section, flags=re.M))
    big = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if len(path.read_text(encoding="utf-8").splitlines()) > 420
    }
    assert big <= listed, f"over 420 lines, not in docs/architecture.md: {sorted(big - listed)}"
    assert listed <= {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}, listed
