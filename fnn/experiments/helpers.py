"""Helpers shared by the experiments: tables, figures, a full-batch descent loop.

A table is a list of dicts with the same keys (the columns, in insertion
order). :class:`Table` shows one as Markdown in a notebook and as plain text
with ``print``.
"""

from collections.abc import Sequence

import numpy as np

__all__ = ["Table", "fmt", "figure", "markdown", "trajectory"]


def fmt(v) -> str:
    """A table cell: integers as they are, floats with 4 decimals or in
    scientific notation when very large or small."""
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


def _cell(v) -> str:
    return fmt(v).replace("|", "\\|")  # a literal bar inside a Markdown cell


def markdown(rows: Sequence[dict]) -> str:
    """The rows as a Markdown table (columns: the keys of the first row)."""
    if not rows:
        return "(empty table)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[c]) for c in cols) + " |")
    return "\n".join(lines)


class Table(list):
    """Rows shown as a Markdown table in a notebook, as aligned text by ``print``."""

    def _repr_markdown_(self) -> str:
        return markdown(self)

    def __str__(self) -> str:
        if not self:
            return "(empty table)"
        cols = list(self[0])
        cells = [cols] + [[fmt(r[c]) for c in cols] for r in self]
        widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
        lines = [
            "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))
            for row in cells
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (4.5, 3.5)):
    """``plt.subplots`` with a grid of ``size`` panels; axes always 2-D."""
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

    Each step is ``updates, state = optimizer.update(∇J(θ), state, θ)`` then
    ``θ ← apply_updates(θ, updates)``.

    Returns ``(params_path, losses)``: the parameters before each step and
    after the last (leading axis ``steps + 1``) and the loss at each of them
    (``(steps + 1,)``).
    """
    import jax
    import jax.numpy as jnp

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
        path = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), path, last)
        return path, jnp.concatenate([Js, loss_fn(p)[None]])

    return go(params)
