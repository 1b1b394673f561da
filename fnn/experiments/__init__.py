"""The experiments behind the notebooks and ``scripts/``, importable from fnn.

Each module ``fnn.experiments.<name>`` holds one experiment's functions (the
tables it computes and the figures it draws) and a ``run(quick) -> dict``; the
notebooks call them after showing the fnn calls in their cells, and the scripts
in ``scripts/`` are command-line front ends that write the tables and figures
to files. ``quick=True`` shrinks the work to seconds.
"""
