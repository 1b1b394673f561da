"""The documentation: its examples run, its API reference covers the public API,
its source references resolve, and the site builds with warnings as errors."""

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDES = sorted((DOCS / "guides").glob("*.md"))
PAGES = [DOCS / "index.md", *GUIDES]

# Public modules whose names the API reference must document.
MODULES = [
    "fnn",
    "fnn.nn",
    "fnn.optim",
    "fnn.schedules",
    "fnn.losses",
    "fnn.activations",
    "fnn.initializers",
    "fnn.data",
    "fnn.stream",
    "fnn.datasets",
    "fnn.checkpoint",
    "fnn.interop",
    "fnn.parallel",
    "fnn.models",
    "fnn.graph",
    "fnn.rbf",
]
SHORT_NAMES = ("Deep Learning 2020", "Laurent", "Balvert", "Neacșu & Vasilescu")


def python_blocks(page: Path) -> list[str]:
    """The page's ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


def run_page(page: Path, tmp_path, monkeypatch) -> dict:
    """Execute the page's Python blocks in order in one namespace, in a
    temporary working directory (the examples write files)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{page.relative_to(ROOT)} [block {i + 1}]", "exec"),
             namespace)  # noqa: S102
    return namespace


def test_every_guide_has_examples_that_compile():
    assert len(GUIDES) >= 9
    for page in PAGES:
        blocks = python_blocks(page)
        assert blocks, f"{page.name} has no ```python example"
        for i, block in enumerate(blocks):
            compile(block, f"{page.name} [block {i + 1}]", "exec")


# Every example runs as written. Each page compiles its own programs (tens of
# seconds on a 2-core CPU), so they are marked slow; CI runs them (.ci/run).
@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_examples_run(page, tmp_path, monkeypatch):
    run_page(page, tmp_path, monkeypatch)


def test_api_reference_documents_every_public_module():
    directives = set()
    for page in (DOCS / "api").glob("*.md"):
        directives |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), re.M))
    assert directives == set(MODULES)
    # A public module added to fnn needs a page (and an entry in MODULES).
    import fnn
    import fnn.models  # noqa: F401  (not imported by fnn itself)

    public = {"fnn", "fnn.models"} | {
        f"fnn.{name}"
        for name in fnn.__all__
        if isinstance(getattr(fnn, name), type(fnn))
    }
    assert public <= set(MODULES), sorted(public - set(MODULES))
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (DOCS / "api").glob("*.md"):
        assert f"api/{page.name}" in nav


def test_public_names_are_documented_by_their_module():
    """The reference renders each module's ``__all__`` (docs/_griffe_fnn.py
    reads it at run time): every public name belongs to a documented module."""
    for name in MODULES:
        module = importlib.import_module(name)
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        for member in module.__all__:
            assert hasattr(module, member), f"{name}.__all__ names {member!r}"


def test_source_references_use_short_names():
    """No reference to the source documents by their file numbers is left in
    the library, the scripts, the benchmarks, the README or the docs."""
    pattern = re.compile(r"\bseeds? ?0{2}[0-3]\b|\bseeds? 0{2}[0-3]", re.I)
    files = [ROOT / "README.md", *DOCS.rglob("*.md")]
    for folder in ("fnn", "scripts", "benchmarks"):
        files += (ROOT / folder).rglob("*.py")
    offenders = [
        f"{f.relative_to(ROOT)}:{n}: {line.strip()}"
        for f in files
        if "notebooks" not in f.parts
        for n, line in enumerate(f.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, "\n".join(offenders)


def test_sources_page_resolves_every_short_name():
    sources = (DOCS / "sources.md").read_text()
    anchors = {
        "Deep Learning 2020": "deep-learning-2020",
        "Laurent": "laurent",
        "Balvert": "balvert",
        "Neacșu & Vasilescu": "neacsu-vasilescu",
    }
    for name, anchor in anchors.items():
        assert f"## [{name}] {{#{anchor}}}" in sources
    readme = (ROOT / "README.md").read_text()
    assert "## Sources" in readme
    for name in SHORT_NAMES:
        assert f"**[{name}]**" in readme
    # Every citation in the library names one of the four documents.
    cite = re.compile(r"\[(Deep Learning 2020|Laurent|Balvert|Neacșu &)[;,\]\s]")
    cited = {m.group(1) for f in (ROOT / "fnn").rglob("*.py")
             for m in cite.finditer(f.read_text())}
    assert cited == {"Deep Learning 2020", "Laurent", "Balvert", "Neacșu &"}


def test_griffe_extension_rewrites_docstrings():
    """Sphinx roles become cross-references, ``.. math::`` becomes display math
    and short source names link to the Sources page."""
    pytest.importorskip("griffe")  # the docs extra (.ci/run runs this after make docs)
    sys.path.insert(0, str(DOCS))
    try:
        ext = importlib.import_module("_griffe_fnn")
    finally:
        sys.path.remove(str(DOCS))
    text = "See ::\n\n    x = 1\n\n.. math::\n\n    a = b\n\n[Laurent, SGD algorithm]."
    out = ext._blocks(text)
    assert "$$\na = b\n$$" in out and "See :" in out and "::" not in out
    m = ext._CITE.search("[Laurent, SGD algorithm].")
    assert ext.FnnDocstrings._cite(m) == "[Laurent, SGD algorithm][laurent]"
    m = ext._CITE.search("see [Deep Learning\n2020, Early stopping]")
    assert ext.FnnDocstrings._cite(m).endswith("][deep-learning-2020]")
    m = ext._CITE.search("[Laurent; Neacșu & Vasilescu]")
    assert ext.FnnDocstrings._cite(m).endswith("][sources]")


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict`` (notebooks executed in their quick form) and
    every public name has an anchor in the API reference."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("mkdocs_jupyter")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs, "mkdocs is not installed next to this Python"
    site = tmp_path / "site"
    env = {**os.environ, "FNN_QUICK": "1"}
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = "".join(p.read_text() for p in (site / "api").rglob("*.html"))
    missing = [
        f"{name}.{member}"
        for name in MODULES
        for member in importlib.import_module(name).__all__
        if not isinstance(getattr(importlib.import_module(name), member), type(os))
        and f'id="{name}.{member}"' not in html
    ]
    assert not missing, missing
