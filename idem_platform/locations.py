"""Finding a code location the way the Dagster CLI does: `-m MODULE`, `-f FILE`, else the project's own.

    load_location(module="my_pipelines.definitions")     # a module on sys.path (the current directory first)
    load_location(file="defs.py")                         # a file
    load_location()                                       # workspace.yaml, else pyproject's [tool.dagster]

The Definitions object is the module's `defs`, else the only `dg.Definitions` it holds at top level.
`Location.dagster_args` are the arguments that make `dagster asset materialize` load the same code location.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml

DEFAULT_MODULE = "idem_platform.definitions"


class LocationError(RuntimeError):
    """The code location could not be found or loaded; the message names what was tried."""


@dataclass(frozen=True)
class Location:
    defs: dg.Definitions
    dagster_args: tuple[str, ...]  # ("-m", module) or ("-f", file)
    name: str


def _definitions_in(namespace: dict, origin: str) -> dg.Definitions:
    if isinstance(namespace.get("defs"), dg.Definitions):
        return namespace["defs"]
    found = [v for k, v in namespace.items() if isinstance(v, dg.Definitions) and not k.startswith("_")]
    if len(found) == 1:
        return found[0]
    raise LocationError(
        f"{origin} holds {len(found)} dagster Definitions objects at top level; name the one to use `defs`"
    )


def _from_module(module: str) -> Location:
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # as `dagster ... -m` does: the working directory's packages come first
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        raise LocationError(f"cannot import code location module {module!r}: {exc}") from exc
    return Location(_definitions_in(vars(loaded), f"module {module!r}"), ("-m", module), module)


def _from_file(file: str) -> Location:
    path = Path(file).absolute()
    if not path.is_file():
        raise LocationError(f"code location file {file} does not exist")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    name = f"idem_location_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return Location(_definitions_in(vars(loaded), f"file {file}"), ("-f", str(path)), path.stem)


def default_target(directory: Path | None = None) -> tuple[str, str]:
    """("module" | "file", value) from workspace.yaml or pyproject's [tool.dagster] in `directory` (default: cwd)."""
    directory = directory or Path.cwd()
    workspace = directory / "workspace.yaml"
    if workspace.is_file():
        entries = (yaml.safe_load(workspace.read_text()) or {}).get("load_from") or []
        for entry in entries:
            if "python_module" in entry:
                value = entry["python_module"]
                return "module", value if isinstance(value, str) else value["module_name"]
            if "python_file" in entry:
                value = entry["python_file"]
                relative = value if isinstance(value, str) else value["relative_path"]
                return "file", str(directory / relative)
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        tool = tomllib.loads(pyproject.read_text()).get("tool", {}).get("dagster", {})
        if tool.get("module_name"):
            return "module", tool["module_name"]
    return "module", DEFAULT_MODULE


def load_location(module: str | None = None, file: str | None = None) -> Location:
    if module and file:
        raise LocationError("give -m MODULE or -f FILE, not both")
    if not module and not file:
        kind, value = default_target()
        module, file = (value, None) if kind == "module" else (None, value)
    return _from_module(module) if module else _from_file(file)
