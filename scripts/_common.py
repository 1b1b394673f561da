"""Shared helpers of the experiment scripts: the size knob, arguments, tables, figures.

Every script ``scripts/<name>.py`` has ``main(argv=None) -> int`` (its exit
status) and a ``run(quick) -> dict`` doing the experiment; the notebooks import
the same ``run`` functions. ``FNN_QUICK=1`` in the environment (or ``--quick``)
shrinks the work so that a script finishes in seconds.

Tables are lists of dicts with the same keys (the columns, in insertion order);
they are written as CSV and Markdown and printed as Markdown.
"""

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


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


def _fmt(v) -> str:
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        v = float(v)
        if v == 0.0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(v)


def markdown(rows: Sequence[dict]) -> str:
    """The rows as a Markdown table (columns: the keys of the first row)."""
    if not rows:
        return "(empty table)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)


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
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(size[0] * ncols, size[1] * nrows),
        squeeze=False,
        constrained_layout=True,
    )
    return fig, axes


def trajectory(optimizer, loss_fn, params, steps: int):
    """Full-batch steps of a first-order ``optimizer`` on ``loss_fn``, jitted.

    Returns ``(params_path, losses)``: the parameters before each step and
    after the last (leading axis ``steps + 1``) and the loss at each of them
    (``(steps + 1,)``).
    """
    import jax

    from fnn import optim

    def step(carry, _):
        p, s = carry
        J, g = jax.value_and_grad(loss_fn)(p)
        u, s = optimizer.update(g, s, p)
        return (optim.apply_updates(p, u), s), (p, J)

    @jax.jit
    def go(p0):
        (p, _), (path, Js) = jax.lax.scan(
            step, (p0, optimizer.init(p0)), None, length=steps
        )
        last = jax.tree.map(lambda a: a[None], p)
        path = jax.tree.map(lambda a, b: jax.numpy.concatenate([a, b]), path, last)
        return path, jax.numpy.concatenate([Js, loss_fn(p)[None]])

    return go(params)
