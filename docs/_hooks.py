"""MkDocs hooks for fnn's site.

* The "Notebooks" section of the navigation lists every ``notebooks/*.ipynb``
  (``docs/notebooks`` is a link to the repository's ``notebooks/`` folder), so a
  new notebook appears on the site without editing ``mkdocs.yml``.
* Notebooks are executed by mkdocs-jupyter in their quick form: ``FNN_QUICK=1``
  is set for the kernels unless the caller set it. ``FNN_DOCS_EXECUTE=0``
  renders them without executing (a quick preview while writing pages; CI and
  ``make docs`` always execute). The kernels import this checkout's ``fnn``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _title(path: Path) -> str:
    """The notebook's first Markdown heading, else its file name."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path.stem
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        for line in "".join(cell.get("source", [])).splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return path.stem


def on_config(config, **kwargs):
    os.environ.setdefault("FNN_QUICK", "1")
    # The notebooks' kernels import the fnn of this checkout, whichever copy is
    # installed.
    root = str(Path(config.config_file_path).resolve().parent)
    paths = os.environ.get("PYTHONPATH", "")
    if root not in paths.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, paths) if p)
    if os.environ.get("FNN_DOCS_EXECUTE", "1") == "0":
        config["plugins"]["mkdocs-jupyter"].config["execute"] = False
    docs = Path(config["docs_dir"])
    notebooks = sorted((docs / "notebooks").glob("*.ipynb"))
    for entry in config["nav"]:
        if isinstance(entry, dict) and "Notebooks" in entry:
            entry["Notebooks"] = [
                {_title(p): f"notebooks/{p.name}"} for p in notebooks
            ]
    return config
