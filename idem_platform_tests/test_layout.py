"""The house: platform apart from pipelines, pipelines only on the public API, no import cycles."""

import ast
from pathlib import Path

import idem_platform

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "idem_platform"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The idem_platform modules a file imports (relative imports resolved; `from X import name` -> X.name if a module)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("idem_platform")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("idem_platform"):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if _exists(candidate) else base)
    return found


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_pipelines_use_only_the_public_api():
    public = set(idem_platform.__all__)
    for path in (PACKAGE / "pipelines").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("idem_platform"):
                if node.module.startswith("idem_platform.pipelines"):
                    continue
                assert node.module == "idem_platform", f"{path}: imports {node.module}"
                assert {a.name for a in node.names} <= public, f"{path}: {[a.name for a in node.names]}"
            if isinstance(node, ast.ImportFrom) and node.level >= 2 and path.parent.name == "pipelines":
                raise AssertionError(f"{path}: relative import out of the pipelines package")
            if isinstance(node, ast.ImportFrom) and node.level > len(path.relative_to(PACKAGE / "pipelines").parts) - 1:
                raise AssertionError(f"{path}: relative import reaches the platform ({node.module})")


def test_platform_core_does_not_import_pipelines():
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        if module.startswith("idem_platform.pipelines") or module in ("idem_platform.definitions", "idem_platform.cli"):
            continue
        assert not any(m.startswith("idem_platform.pipelines") for m in _imports(path)), module


def test_no_import_cycles():
    graph = {_module_name(p): {m for m in _imports(p) if _exists(m)} for p in PACKAGE.rglob("*.py")}
    # a package's __init__ importing its submodules is not a cycle with them
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt == "idem_platform" or nxt == node:
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        if node not in state and node != "idem_platform":
            visit(node, [])


def test_public_names_are_importable_from_the_root():
    for name in idem_platform.__all__:
        assert getattr(idem_platform, name) is not None


def test_loading_a_code_location_imports_no_client_it_may_not_use():
    """Every process that loads a code location (each run, the code server, the daemon) pays its imports. The
    search client is imported when a search sink is first used, the SQL event log modules (SQLAlchemy, Alembic:
    0.3 s) when an instance needs them; a module-level import would put them back in every process unnoticed."""
    import subprocess
    import sys

    heavy = ("sqlalchemy", "alembic", "elasticsearch", "elastic_transport", "dagster_postgres", "dagster_webserver")
    probe = (f"import sys, idem_platform, idem_platform.definitions; "
             f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
