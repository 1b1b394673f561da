"""Experiments of the sources, as importable functions (used by the notebooks and
by the command-line scripts in ``scripts/``).

Each module has a ``run(quick=False) -> dict`` doing the experiment (tables as
lists of dicts under ``"rows"``) and a ``plot(result)`` returning a matplotlib
figure; ``quick=True`` shrinks the work to seconds.

  * :mod:`fnn.experiments.xor_init`: does the starting point matter? The XOR
    network from 20 initializations per scheme, one :func:`fnn.sweep` call
    [Neacșu & Vasilescu, "Initialization mechanisms"].
  * :mod:`fnn.experiments.optimizers`: gradient descent, momentum, Nesterov and
    the adaptive methods on a regression and a small network; the learning-rate
    sweep around the stability limit 2/λ_max as one :func:`fnn.sweep` call
    [Neacșu & Vasilescu, "Gradient descent algorithms"; Deep Learning 2020, 6].
"""
