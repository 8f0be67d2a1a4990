"""One ``RESULTS.md`` for every benchmark script: each script owns one section of it.

A section runs from ``<!-- section: NAME -->`` to ``<!-- end: NAME -->``. ``write_section``
replaces a script's own section and leaves the others as they are (a new section is added at the
end, in the order of ``SECTIONS``), so ``make bench`` can run the scripts one after the other, and
one script can be re-run alone.
"""

from __future__ import annotations

import re
from pathlib import Path

# The order of the sections in RESULTS.md: the EM engine, image segmentation, larger than memory.
SECTIONS = ("em", "segmentation", "scale")


def _pattern(name):
    return re.compile(rf"<!-- section: {re.escape(name)} -->\n.*?<!-- end: {re.escape(name)} -->\n",
                      re.S)


def write_section(path, name, markdown):
    """Write ``markdown`` as section ``name`` of the file at ``path`` (created if absent)."""
    if name not in SECTIONS:
        raise ValueError(f"unknown section {name!r}; expected one of {SECTIONS}")
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    block = f"<!-- section: {name} -->\n{markdown.rstrip()}\n<!-- end: {name} -->\n"
    if _pattern(name).search(text):
        text = _pattern(name).sub(lambda _: block, text, count=1)
    else:
        sections = {other: m.group(0) for other in SECTIONS
                    if (m := _pattern(other).search(text))}
        sections[name] = block
        text = "\n".join(sections[s] for s in SECTIONS if s in sections)
    path.write_text(text)
