"""The report: the notebooks' tables, figures, animations and side-by-side comparisons (see
``emlab/__init__.py``). Nothing in the package imports it."""
