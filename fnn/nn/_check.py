"""The three-way check of one block: its backward, ``jax.vjp``, finite differences.

For a block b, parameters θ, an input x and a random cotangent dy, the
hand-written backward must be the vector-Jacobian product of the forward:

    b.backward(θ, cache, dy) = (∂⟨b(θ, x), dy⟩/∂θ, ∂⟨b(θ, x), dy⟩/∂x)

:func:`check_block` computes the right-hand side twice more, by ``jax.vjp`` of
the block's own forward and by central differences of ⟨b(θ, x), dy⟩, in
float64 inside a scoped ``jax.enable_x64``, and reports [Deep Learning 2020]'s relative
difference for the input and every parameter leaf (the article "Deep
Learning", section 4, "Gradient Checking": about 1e-7 or below is correct,
1e-3 or above is a bug). It raises nothing on a failed check: the report says
which leaf is wrong. A leaf whose backward equals ``jax.vjp`` while finite
differences disagree is marked ``kink`` (a relu at 0, a tie in a max).
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._compare import numerical_grad, relative_difference, to_float64, verdict
from .._tree import keystr
from ._block import Block


def leaf_labels(model: Block, tree: Any) -> list[tuple[str, Any]]:
    """``(label, leaf)`` for every leaf of a params-shaped ``tree`` of ``model``,
    the label naming the key path and the layer that owns the leaf, e.g.
    ``"[2][0] Dense(64, relu) ['W']"``."""
    rows = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        owner, depth = model, 0
        while owner.children and depth < len(path):
            k = path[depth]
            if not isinstance(k, jax.tree_util.SequenceKey):
                break
            owner, depth = owner.children[k.idx], depth + 1
        head = jax.tree_util.keystr(tuple(path[:depth]))
        rest = jax.tree_util.keystr(tuple(path[depth:]))
        rows.append((" ".join(s for s in (head, owner.name, rest) if s), leaf))
    return rows


class LeafCheck(NamedTuple):
    """One row of a :class:`BlockCheck`: a leaf and its relative differences."""

    label: str
    manual_vs_autodiff: float
    manual_vs_numerical: float
    verdict: str


class BlockCheck(NamedTuple):
    """The report of :func:`check_block`.

    Attributes:
      name: the block's name.
      rows: one :class:`LeafCheck` per leaf (``x`` first, then the parameters).
      passed: every leaf's backward equals ``jax.vjp`` (≤ 1e-7); ``kink`` rows
        pass, ``suspect`` and ``WRONG`` rows fail.
    """

    name: str
    rows: tuple[LeafCheck, ...]
    passed: bool

    def table(self) -> str:
        """The report as a plain-text table."""
        width = max([len(r.label) for r in self.rows] + [4])
        head = f"{'leaf':<{width}}  {'manual~autodiff':>15}  {'manual~numerical':>16}"
        lines = [f"{self.name}: {'passed' if self.passed else 'FAILED'}", head]
        for r in self.rows:
            lines.append(
                f"{r.label:<{width}}  {r.manual_vs_autodiff:>15.2e}  "
                f"{r.manual_vs_numerical:>16.2e}  {r.verdict}"
            )
        return "\n".join(lines)

    @property
    def failures(self) -> list[LeafCheck]:
        """The rows whose verdict is ``suspect`` or ``WRONG``."""
        return [r for r in self.rows if r.verdict in ("suspect", "WRONG")]

    def __repr__(self) -> str:
        worst = max((r.manual_vs_autodiff for r in self.rows), default=0.0)
        bad = ", ".join(r.label for r in self.failures)
        return (
            f"BlockCheck({self.name}: {'passed' if self.passed else 'FAILED'}, "
            f"{len(self.rows)} leaves, worst manual~autodiff {worst:.1e}"
            + (f", wrong: {bad}" if bad else "")
            + ")"
        )

    __str__ = table


def _structure_failure(name, what, expected, found) -> BlockCheck:
    row = LeafCheck(f"{what} structure", float("inf"), float("inf"), "WRONG")
    return BlockCheck(
        f"{name} ({what}: expected {expected}, got {found})", (row,), False
    )


def check_block(
    block: Block,
    in_shape: Sequence[int],
    *,
    key: jax.Array | None = None,
    train: bool = False,
    dtype=jnp.float64,
    batch: int = 3,
    x: Any = None,
    eps: float = 1e-6,
) -> BlockCheck:
    """Check a block's hand-written backward against ``jax.vjp`` and finite
    differences, for the input and every parameter leaf, in float64.

    Args:
      block: the block (any block: fnn's, a combinator, the user's own).
      in_shape: per-example input shape, e.g. ``(5,)`` or ``(8, 8, 3)``.
      key: PRNG key for the parameters, the input, the cotangent and (with
        ``train``) the block's randomness (default ``jax.random.key(0)``).
      train: check the training-mode forward (dropout with a fixed key, batch
        statistics).
      dtype: the float dtype of the check (float64; float32 for a rough look).
      batch: rows of the random input ``(batch, *in_shape)``.
      x: an input to use instead of a random one (integer ids for an
        embedding: then no input gradient is checked).
      eps: the finite-difference step.

    Returns:
      A :class:`BlockCheck`; ``print(result)`` shows the table, ``result.passed``
      the verdict. A failed check raises nothing.
    """
    key = jax.random.key(0) if key is None else key
    k_init, k_x, k_dy, k_fwd = jax.random.split(key, 4)
    with jax.enable_x64(dtype == jnp.float64):
        params, state, _ = block.init(k_init, tuple(in_shape), dtype)
        params, state = to_float64(params), to_float64(state)
        if x is None:
            x = jax.random.normal(k_x, (batch, *in_shape), dtype)
        x = jnp.asarray(x)
        x_float = jnp.issubdtype(x.dtype, jnp.floating)
        if x_float:
            x = x.astype(dtype)

        def f(p, x):
            return block.forward(p, state, x, k_fwd, train)[0]

        y, _, cache = block.forward(params, state, x, k_fwd, train)
        dy = jax.random.normal(k_dy, y.shape, y.dtype)
        dparams, dx = block.backward(params, cache, dy)
        structure = jax.tree.structure(params)
        if jax.tree.structure(dparams) != structure:
            return _structure_failure(
                block.name, "dparams", structure, jax.tree.structure(dparams)
            )
        for (path, p), g in zip(
            jax.tree_util.tree_flatten_with_path(params)[0],
            jax.tree.leaves(dparams),
            strict=True,
        ):
            if jnp.shape(g) != jnp.shape(p):
                return _structure_failure(
                    block.name, f"dparams{keystr(path)} shape", p.shape, g.shape
                )
        if x_float:
            _, vjp = jax.vjp(f, params, x)
            auto_p, auto_x = vjp(dy)
            num_p, num_x = numerical_grad(
                lambda t: jnp.vdot(f(*t), dy), (params, x), eps
            )
        else:
            _, vjp = jax.vjp(lambda p: f(p, x), params)
            (auto_p,) = vjp(dy)
            num_p = numerical_grad(lambda p: jnp.vdot(f(p, x), dy), params, eps)
        rows = []
        if x_float:
            if jnp.shape(dx) != x.shape:
                return _structure_failure(block.name, "dx shape", x.shape, dx.shape)
            rows.append(("x (input)", dx, auto_x, num_x))
        manual = leaf_labels(block, dparams)
        for (label, m), a, n in zip(
            manual, jax.tree.leaves(auto_p), jax.tree.leaves(num_p), strict=True
        ):
            rows.append((label, m, a, n))
        checks = []
        for label, m, a, n in rows:
            ma, mn = relative_difference(m, a), relative_difference(m, n)
            checks.append(LeafCheck(label, ma, mn, verdict(ma, mn)))
    passed = all(c.verdict in ("ok", "kink") for c in checks)
    return BlockCheck(block.name, tuple(checks), passed)
