"""The layering holds, between the top-level packages and inside ``server/``.

Top level, read downward: tests → bench → cli → flywheel → convert → artifacts, and
server → artifacts (the server never imports the lifecycle code above it, nor ``convert``).
Inside ``server/``: api → runtime → domain packages → engine.

Read from the source (every ``import``, including those inside functions), so a cycle or an
upward import hidden in a function body fails here rather than at some later import order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"
HTTP_LIBRARIES = ("fastapi", "starlette", "fastapi_offline")
DOMAIN = (
    "chat",
    "agents",
    "rag",
    "security",
    "observability",
    "engine",
    "feedback",
    "registry",
    "drift",
    "rollout",
)
# What each part of server/ may import from server/ (besides itself).
ALLOWED: dict[str, set[str]] = {
    "app": {"api", "runtime", "settings", *DOMAIN},
    "api": {"runtime", "settings", *DOMAIN},
    "runtime": {"settings", *DOMAIN},
    # Chat shaping (templates, tools, JSON grammars) sits on the engine, which knows tokens only.
    "chat": {"engine"},
    "agents": {"rag", "chat", "engine", "settings"},
    "rag": set(),
    "drift": set(),
    "security": set(),
    "observability": {"engine"},
    "engine": set(),
    "feedback": set(),
    "registry": set(),
    "rollout": set(),  # champion/challenger: statistics and who gets which variant, no I/O
    # The engine's config types and the capture level, so each has one definition.
    "settings": {"engine", "feedback"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(p): p for p in sorted(SERVER.rglob("*.py"))}

# What each top-level package may import of ours (besides itself): only what sits below it.
PACKAGES: dict[str, set[str]] = {
    "artifacts": set(),
    "convert": {"artifacts"},
    "server": {"artifacts"},
    "flywheel": {"artifacts", "convert", "server"},
    "cli": {"artifacts", "convert", "server", "flywheel"},
    "bench": {"artifacts", "convert", "server", "flywheel", "cli"},
    "tests": {"artifacts", "convert", "server", "flywheel", "cli", "bench"},
}
PACKAGE_FILES = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "server"


def _server_imports(module: str) -> set[str]:
    return {name for name in _imports(MODULES[module]) if name in MODULES and name != module}


def upward_imports(path: Path, package: str) -> list[str]:
    """The imports in ``path`` (a file of ``package``) of our packages it may not import."""
    allowed = PACKAGES[package] | {package}
    return sorted(
        name
        for name in _imports(path)
        if name.split(".")[0] in PACKAGES and name.split(".")[0] not in allowed
    )


@pytest.mark.parametrize(
    "path", PACKAGE_FILES, ids=[str(p.relative_to(ROOT)) for p in PACKAGE_FILES]
)
def test_top_level_packages_import_only_downward(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    upward = upward_imports(path, package)
    assert not upward, f"{path.relative_to(ROOT)} imports {upward}, against the layering"


def test_every_top_level_package_has_a_place_in_the_layering() -> None:
    ours = {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "__init__.py").is_file()
    }
    assert ours <= set(PACKAGES), f"packages missing from PACKAGES: {sorted(ours - set(PACKAGES))}"


def test_the_package_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself works: server importing the flywheel (or convert) is caught, and
    the flywheel importing the server is not."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from server.engine.types import Engine\n"
        "def f():\n"
        "    from flywheel.gate.report import compare\n"
        "    import convert.pipeline\n"
    )
    assert upward_imports(bad, "server") == [
        "convert.pipeline",
        "flywheel.gate.report",
        "flywheel.gate.report.compare",
    ]
    assert upward_imports(bad, "flywheel") == []
    assert upward_imports(bad, "artifacts") == [
        "convert.pipeline",
        "flywheel.gate.report",
        "flywheel.gate.report.compare",
        "server.engine.types",
        "server.engine.types.Engine",
    ]


def test_server_root_holds_only_the_app_and_its_settings() -> None:
    loose = sorted(p.name for p in SERVER.glob("*.py"))
    assert loose == ["__init__.py", "app.py", "settings.py"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module: str) -> None:
    part = _part(module)
    if part == "server":
        return
    allowed = ALLOWED[part] | {part}
    upward = sorted(m for m in _server_imports(module) if _part(m) not in allowed)
    assert not upward, f"{module} imports {upward}, against the layering"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _part(m) not in ("api", "app")))
def test_only_the_api_layer_knows_http(module: str) -> None:
    http = sorted(n for n in _imports(MODULES[module]) if n.split(".")[0] in HTTP_LIBRARIES)
    assert not http, f"{module} imports {http}: HTTP belongs in server/api"


def test_no_import_cycles() -> None:
    graph = {module: _server_imports(module) for module in MODULES}
    # A package's __init__ importing its own submodules is not a cycle a reader trips on.
    for module, deps in graph.items():
        graph[module] = {d for d in deps if not d.startswith(module + ".")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_layering_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself works: an engine module importing the API is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from server.api.errors import APIError\n")
    assert "server.api.errors" in _imports(bad)
