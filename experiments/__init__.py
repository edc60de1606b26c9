"""Experiment drivers: each runs pipeline stages as subprocesses (``distill.procs.run_stage``) and
gathers their outputs into one table. No stage imports this package (tests/test_structure.py)."""
