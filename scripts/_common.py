"""Shared helpers of the experiment scripts: the size knob, arguments, tables, figures.

Every script ``scripts/<name>.py`` has ``main(argv=None) -> int`` (its exit
status); the experiment itself (``run(quick) -> dict``, its tables and
figures) is in the installed package as ``fnn.experiments.<name>``, which the
notebooks use too. ``FNN_QUICK=1`` in the environment (or ``--quick``) shrinks
the work so that a script finishes in seconds.

Tables are lists of dicts with the same keys (the columns, in insertion order);
they are written as CSV and Markdown and printed as Markdown.
"""

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fnn.experiments.helpers import figure as _figure
from fnn.experiments.helpers import fmt, markdown, trajectory

__all__ = [
    "figure",
    "markdown",
    "parser",
    "quick_from_env",
    "report",
    "save_figure",
    "trajectory",
    "write_table",
]


def quick_from_env() -> bool:
    """True when ``FNN_QUICK`` is set to anything but ``""``/``"0"``."""
    return os.environ.get("FNN_QUICK", "") not in ("", "0")


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the common ``--out DIR`` and ``--quick``."""
    p = argparse.ArgumentParser(prog=f"{name}.py", description=description)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs") / name,
        help=f"output folder for tables and figures (default runs/{name})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        default=quick_from_env(),
        help="reduced sizes (also set by FNN_QUICK=1)",
    )
    return p


_fmt = fmt  # the cell format of the tables


def write_table(rows: Sequence[dict], out: Path, name: str) -> str:
    """Write ``out/name.csv`` and ``out/name.md``; return the Markdown text."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
    text = markdown(rows)
    (out / f"{name}.md").write_text(text + "\n")
    return text


def report(rows: Sequence[dict], out: Path, name: str, title: str = "") -> None:
    """Write the table and print it under an optional title."""
    text = write_table(rows, out, name)
    if title:
        print(f"\n## {title}\n")
    print(text)


def save_figure(fig, out: Path, name: str) -> Path:
    """Save ``fig`` as ``out/name.png`` (and close it); return the path."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (4.5, 3.5)):
    """``plt.subplots`` with a grid of ``size`` panels; axes always 2-D."""
    import matplotlib

    if "MPLBACKEND" not in os.environ and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")  # scripts: no display needed
    return _figure(nrows, ncols, size)
