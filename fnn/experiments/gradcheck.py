"""Three-way gradient report: manual backprop, jax.grad and finite differences.

Two parts, both in float64 with the relative difference of [Deep Learning
2020, Gradient Checking]
||a - b|| / (||a|| + ||b||):

* the MLP grid: for every activation of ``fnn.activations.names()`` (as the
  hidden activation) x loss x depth, a random MLP and batch are drawn and
  ``fnn.compare_gradients`` compares the three gradients of the loss (quick
  mode: every activation once, the losses taken in turn, depth 2);
* the blocks: ``fnn.nn.check_block`` checks every block of ``fnn.nn`` (Dense,
  Activation, Dropout in training mode, BatchNorm in both modes, LayerNorm,
  Conv2D, the poolings, Flatten, Maxout, PReLU, the embeddings, RMSNorm,
  LSTM, GRU, multi-head attention) and the combinators
  (Sequential, Residual, Concat, nested) leaf by leaf, and its table is printed.

A row fails (verdict ``WRONG``) when manual vs autodiff exceeds ``tol_auto``
(default 1e-9: two exact methods). When the manual gradient equals autodiff's
but manual vs finite differences exceeds ``tol_fd`` (default 1e-5; [Deep
Learning 2020, Gradient Checking] expects about eps = 1e-7 for a correct
backward and flags about 1e-3), the row
says ``kink``: the difference step crossed a non-differentiable point (see
below), which the row reports and does not count as a failure. A block fails
when its check fails or a leaf exceeds the same tolerances away from a kink.
``run`` reports ``ok = False`` if any row or block fails.

``plant_bug=True`` replaces the hidden activation's derivative by a wrong one
(tanh' = 1 - tanh instead of 1 - tanh^2) in the manual backward only, to show
what a bug looks like: the manual gradient then disagrees with both others by
1e-2 or more, and ``ok`` is False. The tanh Dense block of the block
checks gets the same wrong derivative, and its check names the wrong leaves.

relu, leaky_relu and step have a kink at 0: a finite-difference step that
crosses it shows as a larger manual-vs-numerical difference, not as a bug.
With Gaussian inputs and eps = 1e-7 this is rare, except for step: its hidden
outputs are 0 or 1, so with zero biases a deeper layer's pre-activation is
exactly 0 whenever a row of the layer before is all zero, and a bias moved by
±eps jumps across the step (the full grid has such a row). The block checks
use nonzero biases.

References: [Deep Learning 2020, Gradient Checking].
"""

import jax
import jax.numpy as jnp

import fnn

from .helpers import Table, figure

ACTIVATIONS = tuple(fnn.activations.names())
LOSSES = ("mse", "bce", "cross_entropy", "huber")
DEPTHS = (1, 2, 3)
#: Flat inputs of width 4 and 5x5x2 images (shared shapes compile once).
FLAT, IMAGE, SEQUENCE = (4,), (5, 5, 2), (3, 4)
#: Token ids of the embedding check, (m, T) = (3, 5), vocabulary 4.
IDS = ((0, 1, 1, 3, 1), (2, 2, 0, 0, 1), (3, 0, 2, 1, 1))


def buggy_tanh():
    """tanh whose manual derivative is wrong: 1 - tanh(z) (should be 1 - tanh^2)."""
    good = fnn.activations.get("tanh")

    def grad(Z):
        return 1.0 - jnp.tanh(Z)

    return fnn.activations.Activation(
        "tanh(buggy)", good.fn, grad, lambda Z, dA: dA * grad(Z)
    )


def problem(key, activation, loss, depth, m=8, n_in=5, width=6, n_out=3):
    """A random MLP with ``depth`` hidden layers and a batch for ``loss``."""
    kp, kx, ky = jax.random.split(key, 3)
    sizes = [n_in] + [width] * depth + [n_out]
    params = fnn.init_params(kp, sizes, "glorot_normal", dtype=jnp.float64)
    X = jax.random.normal(kx, (m, n_in), jnp.float64)
    if loss == "cross_entropy":
        y = jax.random.randint(ky, (m,), 0, n_out)
    elif loss == "bce":
        y = jax.random.bernoulli(ky, 0.5, (m, n_out)).astype(jnp.float64)
    else:
        y = jax.random.normal(ky, (m, n_out), jnp.float64)
    return params, X, y


def grid(quick: bool, activations=None) -> list[tuple[str, str, int]]:
    """(activation, loss, depth) of the MLP grid: every activation (of
    ``activations``, default ``ACTIVATIONS``) with every loss and depth, or
    (quick) every activation once, the losses in turn."""
    names = ACTIVATIONS if activations is None else tuple(activations)
    if quick:
        return [(a, LOSSES[i % len(LOSSES)], 2) for i, a in enumerate(names)]
    return [(a, loss, d) for a in names for loss in LOSSES for d in DEPTHS]


def blocks(quick: bool = False, plant_bug: bool = False):
    """``(block, in_shape, train)`` for the block checks: every block of
    ``fnn.nn`` and the combinators (more variants without ``quick``)."""
    nn, b = fnn.nn, {"b_init": "normal"}  # nonzero biases: away from kinks
    tanh = buggy_tanh() if plant_bug else "tanh"
    cases = [
        (nn.Dense(4, tanh, **b), FLAT, False),
        (nn.Activation("elu", alpha=0.5), FLAT, False),
        (nn.Dropout(0.4), FLAT, True),
        (nn.BatchNorm(), FLAT, True),
        (nn.LayerNorm(), FLAT, False),
        (nn.Conv2D(2, 3, padding="SAME", **b), IMAGE, False),
        (nn.MaxPool2D(2), IMAGE, False),
        (nn.AvgPool2D(2), IMAGE, False),
        (nn.Flatten(), IMAGE, False),
        (nn.Maxout(2, 2, **b), FLAT, False),
        (nn.PReLU(), FLAT, False),
        (nn.Sequential([nn.Dense(4, "tanh", **b), nn.Dense(4, **b)]), FLAT, False),
        (fnn.mlp([FLAT[0], 3, 2], activation="tanh", **b), FLAT, False),
        (nn.Residual(nn.Dense(2, "tanh", **b), nn.Dense(2, **b)), FLAT, False),
        (nn.Concat([nn.Dense(2, "sigmoid", **b), nn.Dense(2, **b)]), FLAT, False),
        (
            nn.Residual(
                nn.Sequential(
                    [nn.Dense(4, "tanh", **b), nn.BatchNorm(), nn.Dropout(0.3)]
                )
            ),
            FLAT,
            True,
        ),
    ]
    # sequences (m, T, d) = (3, 3, 4); an embedding reads integer ids
    cases += [
        (nn.Embedding(4, 3), (5,), False),
        (nn.PositionalEmbedding(5, 4), SEQUENCE, False),
        (nn.RMSNorm(), SEQUENCE, False),
        (nn.LSTM(2), SEQUENCE, False),
        (nn.GRU(2, return_sequences=False), SEQUENCE, False),
        (nn.MultiHeadAttention(2, causal=True), SEQUENCE, False),
        (
            nn.Recompute(nn.Sequential([nn.LayerNorm(axis=-1), nn.Dense(4, "gelu")])),
            SEQUENCE,
            False,
        ),
    ]
    if not quick:
        cases += [
            (nn.Dense(4, "relu", **b), FLAT, False),
            (nn.BatchNorm(), FLAT, False),
            (nn.Conv2D(2, 3, stride=2, **b), IMAGE, False),
            (nn.PReLU(shared=True), FLAT, False),
            (nn.BatchNorm(), IMAGE, True),
            (nn.LayerNorm(), IMAGE, False),
            (nn.Conv2D(2, (3, 2), (1, 2), 1, **b), IMAGE, False),
            (nn.MaxPool2D(3, 1), IMAGE, False),
            (nn.AvgPool2D((2, 3), (1, 2)), IMAGE, False),
            (nn.PReLU(), IMAGE, False),
            (nn.Residual(nn.Dense(4, "gelu", **b)), FLAT, False),
            (
                nn.Residual(nn.Concat([nn.Dense(2, "tanh", **b), nn.Dense(2)])),
                FLAT,
                False,
            ),
            (
                nn.Sequential(
                    [
                        nn.Residual(
                            nn.Sequential(
                                [nn.Conv2D(2, 3, padding="SAME"), nn.PReLU()]
                            ),
                            projection=nn.Conv2D(2, 1),
                        ),
                        nn.AvgPool2D(2),
                        nn.Flatten(),
                        nn.Dense(2, **b),
                    ]
                ),
                IMAGE,
                True,
            ),
        ]
    return cases


def check_blocks(quick=False, plant_bug=False, tol_auto=1e-9, tol_fd=1e-5):
    """``fnn.nn.check_block`` of every case of :func:`blocks`: (rows, checks)."""
    rows, checks = Table(), []
    for block, in_shape, train in blocks(quick, plant_bug):
        x = jnp.array(IDS) if block.name.startswith("Embedding(") else None
        c = fnn.nn.check_block(block, in_shape, train=train, key=jax.random.key(7), x=x)
        worst_auto = max(r.manual_vs_autodiff for r in c.rows)
        worst_fd = max(r.manual_vs_numerical for r in c.rows)
        worst_fd_smooth = max(
            (r.manual_vs_numerical for r in c.rows if r.verdict != "kink"),
            default=0.0,
        )
        ok = c.passed and worst_auto <= tol_auto and worst_fd_smooth <= tol_fd
        rows.append(
            {
                "block": block.name,
                "mode": "train" if train else "eval",
                "leaves": len(c.rows),
                "worst manual vs autodiff": float(worst_auto),
                "worst manual vs numerical": float(worst_fd),
                "verdict": "passed" if c.passed else "FAILED",
                "ok": bool(ok),
            }
        )
        checks.append(c)
    return rows, checks


def run(
    quick: bool = False,
    plant_bug: bool = False,
    tol_auto: float = 1e-9,
    tol_fd: float = 1e-5,
    blocks: bool = True,
    activations=None,
):
    """The MLP grid and (with ``blocks``) the block checks.

    ``activations`` restricts the grid to those hidden activations (default:
    every one of ``fnn.activations.names()``).

    Returns:
      ``{"rows": MLP grid rows, "blocks": one row per block check, "checks":
      the :class:`fnn.nn.BlockCheck` reports, "ok": every row and block
      within the tolerances}``.
    """
    rows = Table()
    with jax.enable_x64(True):
        for i, (act, loss, depth) in enumerate(grid(quick, activations)):
            key = jax.random.key(100 * i + 10 * LOSSES.index(loss) + depth)
            params, X, y = problem(key, act, loss, depth)
            a = buggy_tanh() if plant_bug and act == "tanh" else act
            c = fnn.compare_gradients(params, X, y, activation=a, loss=loss)
            if c.manual_vs_autodiff > tol_auto:
                verdict = "WRONG"
            elif c.manual_vs_numerical > tol_fd:
                verdict = "kink"  # the backward is jax.vjp's; see the docstring
            else:
                verdict = "ok"
            rows.append(
                {
                    "activation": act + (" (bug)" if a is not act else ""),
                    "loss": loss,
                    "depth": depth,
                    "manual vs autodiff": float(c.manual_vs_autodiff),
                    "manual vs numerical": float(c.manual_vs_numerical),
                    "autodiff vs numerical": float(c.autodiff_vs_numerical),
                    "verdict": verdict,
                    "ok": verdict != "WRONG",
                }
            )
    block_rows, checks = (
        check_blocks(quick, plant_bug, tol_auto, tol_fd) if blocks else ([], [])
    )
    return {
        "rows": rows,
        "blocks": block_rows,
        "checks": checks,
        "ok": all(r["ok"] for r in rows + block_rows),
    }


def plot(result):
    """The MLP grid's three relative differences, one column per activation
    (losses and depths side by side within it), on a log scale with the
    thresholds 1e-7 (correct) and 1e-3 (a bug)."""
    import numpy as np

    rows = result["rows"]
    names = list(dict.fromkeys(r["activation"] for r in rows))
    fig, axes = figure(1, 1, (max(6.0, 0.45 * len(names) + 2), 3.6))
    ax = axes[0, 0]
    within = {}
    xs = []
    for r in rows:
        i = names.index(r["activation"])
        k = within.get(i, 0)
        within[i] = k + 1
        xs.append((i, k))
    spread = max(within.values())
    pos = np.asarray([i + 0.6 * (k + 0.5) / spread - 0.3 for i, k in xs])
    for key, mk, dx in (
        ("manual vs autodiff", "o", -0.05),
        ("manual vs numerical", "s", 0.0),
        ("autodiff vs numerical", "^", 0.05),
    ):
        vals = np.maximum([r[key] for r in rows], 1e-18)
        ax.semilogy(pos + dx, vals, mk, ms=4, label=key, alpha=0.7)
    ax.axhline(1e-7, color="g", ls=":", label="1e-7: correct")
    ax.axhline(1e-3, color="r", ls=":", label="1e-3: a bug")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(
        xlabel="hidden activation (losses and depths side by side)",
        ylabel="relative difference",
        ylim=(1e-18, 1e3),
    )
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    return fig
