"""Models built on ``em_helpers``: the course's scans and fits, the categorical mixture, model
choice, imputation and the bootstrap (see ``emlab/__init__.py``)."""
