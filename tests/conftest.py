"""Hypothesis runs derandomized: the same examples on every machine, so CI cannot turn red
(or green) by chance, and a failure seen once is seen again."""

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")
