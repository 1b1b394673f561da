"""Vanishing and exploding gradients: per-layer gradient norms against depth.

Command-line front end of :mod:`fnn.experiments.unstable_gradients` (see it for the
experiment): writes its tables (CSV and Markdown) and figure to ``--out``.
"""

import sys

from fnn.experiments import unstable_gradients as experiment

try:
    from . import _common
except ImportError:  # run as a script
    import _common

NAME = "unstable_gradients"


def main(argv=None) -> int:
    a = _common.parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    result = experiment.run(a.quick)
    _common.report(result["norms"]["rows"], a.out, NAME, "gradient norms")
    _common.report(result["linear"]["rows"], a.out, "linear", "1.5^L and 0.5^L")
    _common.save_figure(experiment.plot(result), a.out, NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
