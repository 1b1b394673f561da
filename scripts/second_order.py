"""Second-order methods: Newton, nonlinear CG and L-BFGS against Adam.

Command-line front end of :mod:`fnn.experiments.second_order` (see it for the
experiment): writes its tables (CSV and Markdown) and figure to ``--out``.
``--iters`` sets the iterations per method.
"""

import sys

from fnn.experiments import second_order as experiment

try:
    from . import _common
except ImportError:  # run as a script
    import _common

NAME = "second_order"


def main(argv=None) -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=None)
    a = p.parse_args(argv)
    result = experiment.run(a.quick, a.iters)
    _common.report(result["rows"], a.out, NAME, "second-order methods")
    _common.save_figure(experiment.plot(result), a.out, NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
