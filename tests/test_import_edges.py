"""Which package of the kit may import which (docs/architecture.md, "Which package may import which").

Every .py file is parsed and every import collected, those inside functions included (a lazy import is an
edge too), plus importlib.import_module / __import__ calls with a literal name. Relative imports stay inside
their own package and are not edges.
"""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("refimpl", "kernels", "agegender", "training", "bench", "experiments")
# package -> the kit's packages it may import at module level or lazily
ALLOWED = {
    "refimpl": set(),
    "kernels": {"refimpl"},
    "agegender": {"refimpl", "kernels"},
    "training": {"refimpl", "agegender"},      # agegender: the detector and aligner, to make chips from photos
    "bench": {"refimpl", "kernels"},
    "experiments": {"refimpl", "agegender", "training"},     # questions asked of the model, not product code
}
# Only from inside a function, so `import bench` pulls in neither torch nor the face detector: bench's optional
# PyTorch / ncnn comparisons read training's module, and its photo-throughput benchmark runs agegender
LAZY_ONLY = {"bench": {"training", "agegender"}}


def python_files(folder):
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("__pycache__", "build")]
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def imports(path):
    """[(line, imported module, lazy)] for every absolute import in the file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = []

    def visit(node, lazy):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, lazy) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module, lazy))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id == "__import__"))):
            found.append((node.lineno, node.args[0].value, lazy))
        inside = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return found


def edges(folder):
    """[(file:line, imported kit package, lazy)] for the files under `folder`."""
    out = []
    for path in python_files(folder):
        for line, module, lazy in imports(path):
            top = module.split(".")[0]
            if top in PACKAGES and top != folder:
                out.append((f"{os.path.relpath(path, ROOT)}:{line}", top, lazy))
    return out


def test_the_parser_sees_lazy_and_dynamic_imports(tmp_path):
    source = ("import numpy\nfrom refimpl import spec\n"
              "def f():\n    import training.model\n    return importlib.import_module('bench.report')\n"
              "from . import sibling\n")
    path = tmp_path / "m.py"
    path.write_text(source)
    assert imports(str(path)) == [(1, "numpy", False), (2, "refimpl", False), (4, "training.model", True),
                                  (5, "bench.report", True)]


@pytest.mark.parametrize("package", PACKAGES)
def test_allowed_import_edges(package):
    bad = [f"{where}: {package} imports {target}{' (lazily)' if lazy else ''}"
           for where, target, lazy in edges(package)
           if target not in ALLOWED[package] and not (lazy and target in LAZY_ONLY.get(package, ()))]
    allowed = ", ".join(sorted(ALLOWED[package])) or "no other package of the kit"
    lazy = LAZY_ONLY.get(package)
    assert not bad, (f"{package} may import {allowed}{f' (inside functions also {sorted(lazy)})' if lazy else ''}:\n"
                     + "\n".join(bad))


@pytest.mark.parametrize("leaf", ["bench", "experiments"])
def test_nothing_imports_bench_or_experiments(leaf):
    folders = sorted(d for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d))
                     and d not in (leaf, "tests", "build") and not d.startswith("."))
    bad = [f"{where}: imports {leaf}" for folder in folders for where, target, _ in edges(folder) if target == leaf]
    assert not bad, "\n".join(bad)


def test_experiments_are_not_installed():
    """setup.py's find_packages(include=[...]) picks the product packages; experiments/ stays in the repository."""
    from setuptools import find_packages

    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "find_packages")
    include = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "include"))
    installed = find_packages(ROOT, include=include)
    assert "training" in installed and "experiments" not in installed, installed


def test_run_time_path_loads_no_training_bench_or_torch():
    """Loading and running a model through refimpl, kernels and the Estimator imports none of them."""
    code = ("import sys, numpy as np, refimpl, kernels\n"
            "from agegender import Estimator\n"
            "refimpl.load('weights/agegender.onnx').forward(np.zeros((1, 3, 64, 64), np.float32))\n"
            "Estimator().predict_chips(np.zeros((80, 80, 3), np.uint8))\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'training', 'bench', 'torch', 'onnxruntime'})))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "", f"the run-time path imported: {run.stdout.strip()}"
