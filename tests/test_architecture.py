"""The layering rules of docs/ARCHITECTURE.md, checked on the source tree.

Only `mnemoray.distributed` imports Ray; the domain core imports neither the Ray layer nor
the CLI; no module imports another module's private names; and importing the whole core
in a fresh interpreter leaves Ray unloaded (catches transitive imports too).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "mnemoray"
RAY_LAYER = "distributed"


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out.append((".".join(["mnemoray", *parts]), path))
    return out


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names) for every import statement, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
    return sorted(found, key=lambda item: item[0])


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == RAY_LAYER:
        return "ray"
    if len(parts) > 1 and parts[1] in ("cli", "__main__"):
        return "cli"  # the command line and `python -m mnemoray`
    return "core"


MODULES = _modules()


def test_the_tree_has_a_ray_layer_and_a_core():
    layers = {_layer(m) for m, _ in MODULES}
    assert layers == {"ray", "cli", "core"}
    assert len([m for m, _ in MODULES if _layer(m) == "ray"]) >= 10


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_layering(module, path):
    layer = _layer(module)
    problems = []
    for line, imported, _ in _imports(path):
        top = imported.split(".")[0]
        if top == "ray" and layer != "ray":
            problems.append(f"line {line}: imports {imported} (only mnemoray.{RAY_LAYER} may import Ray)")
        if imported.startswith(f"mnemoray.{RAY_LAYER}") and layer == "core":
            problems.append(f"line {line}: the core imports the Ray layer ({imported})")
        # the CLI package, not mnemoray.client (the memory service client, plain Python)
        if (imported == "mnemoray.cli" or imported.startswith("mnemoray.cli.")) and layer != "cli":
            problems.append(f"line {line}: imports the CLI ({imported})")
    assert not problems, f"{path.relative_to(PACKAGE)}: " + "; ".join(problems)


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_no_private_names_across_modules(module, path):
    private = [f"line {line}: {name} from {imported}" for line, imported, names in _imports(path)
               if imported.startswith("mnemoray") and imported != module
               for name in names if name.startswith("_") and not name.startswith("__")]
    assert not private, f"{path.relative_to(PACKAGE)} imports private names: {private}"


def test_importing_the_whole_core_does_not_load_ray():
    core = [m for m, _ in MODULES if _layer(m) == "core" and not m.endswith("__main__")]
    code = ("import importlib, json, sys\n"
            f"for m in {core!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(k for k in sys.modules if k == 'ray' or k.startswith('ray.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_rule_would_catch_a_violation(tmp_path):
    """The checks above are not vacuous: a core module importing Ray inside a function is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import ray.data\n    from mnemoray.distributed.runtime import ray_session\n"
                   "from mnemoray.memory.ops import _secret\n")
    imports = _imports(bad)
    assert [(i[0], i[1]) for i in imports] == [(2, "ray.data"), (3, "mnemoray.distributed.runtime"),
                                               (4, "mnemoray.memory.ops")]
    assert imports[2][2] == ["_secret"]
