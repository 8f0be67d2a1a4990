"""Kept for scripts written before ``common.py``: ``write_section(path, name, markdown)`` of
``common``, with ``path`` the ``RESULTS.md`` file rather than its folder. New scripts use
``common.write_section(folder, name, markdown)``."""

from __future__ import annotations

from pathlib import Path

import common


def write_section(path, name, markdown):
    """Write ``markdown`` as section ``name`` of the ``RESULTS.md`` at ``path``."""
    path = Path(path)
    if path.name != "RESULTS.md":
        raise ValueError(f"{path}: the results file must be named RESULTS.md")
    return common.write_section(path.parent, name, markdown)
