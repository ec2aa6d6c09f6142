"""The package's imports: no cycles, layers that follow the data flow, and a light CLI path.

Every module is parsed with ``ast`` and each ``import``/``from ... import`` of a ferlab module
counts, wherever it stands (function bodies and ``TYPE_CHECKING`` blocks included).
"""

from __future__ import annotations

import ast
import graphlib
import json
import os
import subprocess
import sys
from pathlib import Path

import ferlab

PACKAGE = Path(ferlab.__file__).parent
HEAVY = ("torch", "lightning", "torchmetrics", "sklearn", "matplotlib", "krippendorff")
# Who may import whom. "base" is the package itself and its top-level shared modules (errors,
# config, preprocessing, ...); "data" and "models" stand side by side on it.
ALLOWED = {
    "base": {"base"},
    "data": {"base", "data"},
    "models": {"base", "models"},
    "training": {"base", "data", "models", "training"},
    "inference": {"base", "data", "models", "inference"},
    "evaluation": {"base", "data", "models", "training", "inference", "evaluation"},
    "apps": {"base", "data", "models", "inference", "apps"},
    "commands": {"base", "data", "models", "training", "inference", "evaluation", "apps"}
    | {"commands"},
    "cli": set(),  # anything
}
TOP_LEVEL = {"ferlab.cli": "cli", "ferlab.__main__": "cli", "ferlab.demo": "apps"}


def module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph() -> dict[str, set[str]]:
    """Each ferlab module -> the ferlab modules it imports anywhere in its source."""
    files = module_files()
    graph = {}
    for module, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for name in _imported(node, module, path.name == "__init__.py"):
                while name and name not in files:  # "pkg.module.name" -> "pkg.module"
                    name = name.rpartition(".")[0]
                if name.startswith("ferlab") and name != module:
                    targets.add(name)
        graph[module] = targets
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED):
        return parts[1]
    return TOP_LEVEL.get(module, "base")


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "ferlab.inference.gradcam" in graph["ferlab.evaluation.plots"]  # inside a function
    assert "ferlab.models.heads" in graph["ferlab.models.registry"]  # from .heads import ...
    assert "ferlab.data.sources" in graph["ferlab.data"]  # a package's __init__


def test_no_import_cycles():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_layers_follow_the_data_flow():
    wrong = [
        f"{module} ({layer(module)}) imports {target} ({layer(target)})"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if ALLOWED[layer(module)] and layer(target) not in ALLOWED[layer(module)]
    ]
    assert not wrong, "\n".join(wrong)


def _loaded_after(code: str, packages: tuple[str, ...] = HEAVY) -> list[str]:
    """Those of ``packages`` in sys.modules after running ``code`` in a fresh interpreter."""
    paths = [str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    script = f"import sys\n{code}\nprint(__import__('json').dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    modules = json.loads(out.stdout.splitlines()[-1])
    return [name for name in packages if name in modules]


def test_the_cli_parser_imports_no_heavy_package():
    assert _loaded_after("import ferlab.cli\nferlab.cli.build_parser()") == []


def test_the_service_module_imports_no_heavy_package():
    assert _loaded_after("import ferlab.apps.server") == []


def test_predicting_and_serving_a_model_need_only_torch_of_the_heavy_packages():
    modules = ("apps.service", "inference.batch", "inference.annotate", "inference.image_results")
    modules += ("inference.recognizer", "inference.onnx_export", "inference.explain")
    code = "\n".join(f"import ferlab.{name}" for name in modules)
    assert _loaded_after(code, (*HEAVY, "pytorch_grad_cam")) == ["torch"]
