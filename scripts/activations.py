"""Activation functions and their derivatives; sigmoid saturation; dying ReLUs.

Command-line front end of :mod:`fnn.experiments.activations` (see it for the
experiment): writes its tables (CSV and Markdown) and figure to ``--out``.
"""

import sys

from fnn.experiments import activations as experiment

try:
    from . import _common
except ImportError:  # run as a script
    import _common

NAME = "activations"


def main(argv=None) -> int:
    a = _common.parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    result = experiment.run(a.quick)
    _common.report(result["table"]["rows"], a.out, NAME, "activations")
    _common.report(result["saturation"]["rows"], a.out, "saturation", "sigmoid")
    _common.report(result["dying"]["rows"], a.out, "dying_relu", "dying ReLU")
    _common.save_figure(experiment.plot(result), a.out, NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
