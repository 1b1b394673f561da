"""Three-way gradient report: manual backprop, jax.grad and finite differences.

Command-line front end of :mod:`fnn.experiments.gradcheck` (see it for the
experiment): writes the MLP-grid and block tables, prints every block's
``check_block`` table, and exits with status 1 when any gradient disagrees
beyond its tolerance. ``--plant-bug`` replaces tanh's derivative by a wrong one
in the manual backward to show what a bug looks like (exit status 1).
"""

import sys

from fnn.experiments import gradcheck as experiment

try:
    from . import _common
except ImportError:  # run as a script
    import _common

NAME = "gradcheck"


def main(argv=None) -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--plant-bug", action="store_true", help="wrong tanh derivative")
    p.add_argument("--tol-auto", type=float, default=1e-9)
    p.add_argument("--tol-fd", type=float, default=1e-5)
    p.add_argument("--no-figure", action="store_true")
    a = p.parse_args(argv)
    result = experiment.run(a.quick, a.plant_bug, a.tol_auto, a.tol_fd)
    _common.report(result["rows"], a.out, NAME, "gradient check: MLP grid")
    _common.report(result["blocks"], a.out, f"{NAME}_blocks", "gradient check: blocks")
    for check in result["checks"]:
        print(f"\n{check.table()}")
    if not a.no_figure:
        _common.save_figure(experiment.plot(result), a.out, NAME)
    bad = [r for r in result["rows"] if not r["ok"]]
    bad_blocks = [r for r in result["blocks"] if not r["ok"]]
    print(f"\n{len(result['rows']) - len(bad)}/{len(result['rows'])} rows agree")
    n_blocks = len(result["blocks"])
    print(f"{n_blocks - len(bad_blocks)}/{n_blocks} blocks agree")
    return 1 if bad or bad_blocks else 0


if __name__ == "__main__":
    sys.exit(main())
