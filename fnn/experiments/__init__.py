"""The experiments behind the notebooks and ``scripts/``, importable from fnn.

Each module ``fnn.experiments.<name>`` holds one experiment's functions (the
tables it computes and the figures it draws) and a ``run(quick) -> dict``; the
notebooks call them after showing the fnn calls in their cells, and the scripts
in ``scripts/`` are command-line front ends that write the tables and figures
to files. ``quick=True`` shrinks the work to seconds.

Two of them train populations with :func:`fnn.sweep`, one compiled call each:

  * :mod:`fnn.experiments.xor_init`: does the starting point matter? The XOR
    network from 20 initializations per scheme, every run of every scheme one
    member [Neacșu & Vasilescu, Initialization mechanisms];
  * :mod:`fnn.experiments.optimizers`: gradient descent, momentum, Nesterov and
    the adaptive methods on a regression and a small network; the learning
    rates around the stability limit 2/λ_max as four members [Neacșu &
    Vasilescu, Gradient descent algorithms; Deep Learning 2020, 6].
"""
