"""Gradient descent, momentum, Nesterov and the adaptive methods on a regression.

A command-line front end of :mod:`fnn.experiments.optimizers` (the experiments,
tables and figure live there): the source's regression with SGD, momentum and
Nesterov and the adaptive methods; the learning rates around 2/lambda_max (one
:func:`fnn.sweep` call); a small network; the decay laws; input normalization.

References: [Neacșu & Vasilescu, "Gradient descent algorithms"]; [Deep
Learning 2020, 6].
"""

import sys

from fnn.experiments.optimizers import (  # noqa: F401  (re-exported)
    SOURCE_THETA,
    decay_laws,
    learning_rates,
    normalization,
    plot,
    plot_paths,
    regression,
    run,
    small_network,
)

try:
    from . import _common
except ImportError:  # run as a script
    import _common

NAME = "optimizers"
SEED_THETA = SOURCE_THETA  # the name scripts and tests used before


def main(argv=None) -> int:
    a = _common.parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    result = run(a.quick)
    _common.report(result["regression"]["rows"], a.out, "regression", "theta_1000")
    _common.report(result["learning_rates"]["rows"], a.out, "learning_rates", "rates")
    _common.report(
        result["normalization"]["rows"], a.out, "normalization", "normalization"
    )
    _common.report(result["network"]["rows"], a.out, "network", "small network")
    _common.save_figure(plot(result), a.out, NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
