"""Execute every notebook top to bottom with FNN_QUICK=1; check they are stored clean.

Each notebook runs in a temporary working directory outside the repository and
imports only installed packages: no ``sys.path`` edits, nothing from ``scripts/``.

The kernel is this interpreter (``sys.executable``), declared in a kernelspec
written to a temporary ``JUPYTER_PATH``, so the notebooks see the same
environment as the tests without installing a kernel for the user.
"""

import ast
import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "fnn-tests"


def test_notebooks_are_numbered():
    assert len(NOTEBOOKS) >= 7, [p.name for p in NOTEBOOKS]
    for p in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name), p.name


SCRIPT_MODULES = {"scripts"} | {p.stem for p in (ROOT / "scripts").glob("*.py")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_only_installed_packages(path):
    """No sys.path edits and no imports of scripts/ modules: a notebook runs
    from any directory where fnn is installed."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert "sys.path" not in cell.source, f"{path.name}: cell {i} edits sys.path"
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0] or "."]
            else:
                continue
            bad = [r for r in roots if r in SCRIPT_MODULES or r == "."]
            assert not bad, f"{path.name}: cell {i} imports {bad} (from scripts/)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {i} has outputs"
            assert cell.execution_count is None, f"{path.name}: cell {i} was run"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory, monkeypatch_module=None):
    spec_dir = tmp_path_factory.mktemp("jupyter")
    kdir = spec_dir / "kernels" / KERNEL
    kdir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fnn tests",
        "language": "python",
    }
    (kdir / "kernel.json").write_text(json.dumps(spec))
    env = {
        "JUPYTER_PATH": str(spec_dir),
        "FNN_QUICK": "1",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        ),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# In the slow run: CI's `make docs` executes every notebook in the same quick
# form (mkdocs-jupyter, allow_errors false), so a failing cell fails CI there.
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_quick(path, kernel_env, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},  # outside the repository
    )
    client.execute()  # raises CellExecutionError if a cell raises
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
