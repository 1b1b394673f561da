"""From neuron to MLP: the computational graph, XOR, universal approximation.

Command-line front end of :mod:`fnn.experiments.seed_graph_xor`: writes the
tables (CSV and Markdown) and the figure to ``--out``.
"""

import sys

from fnn.experiments import seed_graph_xor as experiment

try:
    from . import _common
except ImportError:  # run as a script
    import _common

NAME = "seed_graph_xor"


def main(argv=None) -> int:
    a = _common.parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    result = experiment.run(a.quick)
    _common.report(result["graph"]["rows"], a.out, "graph", "f = (x + y) z")
    _common.report(result["xor"]["rows"], a.out, "xor", "XOR fits")
    for k, v in result["xor"]["fits"].items():
        print(f"{k}: {v}")
    _common.report(result["universal"]["rows"], a.out, "universal", "width")
    _common.save_figure(experiment.plot(result), a.out, NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
