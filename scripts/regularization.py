"""Regularization and the bias/variance trade-off on the bundled digits.

Command-line front end of :mod:`fnn.experiments.regularization` (see it for the
experiment): writes its tables (CSV and Markdown) and figure to ``--out``.
``--epochs``, ``--train-size`` and ``--patience`` override the defaults.
"""

import sys

from fnn.experiments import regularization as experiment

try:
    from . import _common
except ImportError:  # run as a script
    import _common

NAME = "regularization"


def main(argv=None) -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--train-size", type=int, default=300)
    p.add_argument("--patience", type=int, default=15)
    a = p.parse_args(argv)
    result = experiment.run(a.quick, a.epochs, a.train_size, a.patience)
    _common.report(result["rows"], a.out, NAME, "test accuracy")
    _common.save_figure(experiment.plot(result), a.out, NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
