"""The engine under ``em_helpers``: validation, covariance models, scaling, the fast path,
the dask path and the one EM loop. Imports nothing above it (see ``emlab/__init__.py``)."""
