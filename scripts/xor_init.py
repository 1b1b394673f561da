"""Does the starting point matter? The XOR network from 20 initializations per scheme.

A command-line front end of :mod:`fnn.experiments.xor_init` (the experiment,
its table and figure live there; every run of every scheme is one member of a
single :func:`fnn.sweep` call). Without ``--quick`` the 20-seed experiment is
repeated ``--repeats`` times (default 10) with fresh seeds, giving the failure
rate per 20 with its spread.

References: [Neacșu & Vasilescu, "Initialization mechanisms: Does the starting
point matter?"].
"""

import sys

from fnn.experiments.xor_init import (  # noqa: F401  (re-exported)
    NAME,
    SCHEMES,
    SOURCE_FAILURES,
    failures,
    plot,
    run,
)

try:
    from . import _common
except ImportError:  # run as a script
    import _common


def main(argv=None) -> int:
    p = _common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--epochs", type=int, default=1000)
    a = p.parse_args(argv)
    result = run(a.quick, a.seeds, a.repeats, a.epochs)
    _common.report(result["rows"], a.out, NAME, "XOR failures")
    _common.save_figure(plot(result), a.out, NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
