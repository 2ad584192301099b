"""Named blocks in a Markdown file, so that one writer replaces its own block and keeps the rest.

A block is the text between ``<!-- begin: KEY -->`` and ``<!-- end: KEY -->`` lines (HTML
comments: invisible when rendered). Blocks nest: ``BENCHMARKS.md`` has one block per CPU model
(``cpu MODEL``), inside it one per kind of run (``cpu MODEL / full``, ``cpu MODEL / quick``,
...) and a hand-written ``cpu MODEL / notes`` that no writer touches.
"""

from __future__ import annotations

import re


def _clean(key: str) -> str:
    """A key as it can stand in an HTML comment on one line."""
    key = " ".join(str(key).split())
    if not key:
        raise ValueError("key: expected a non-empty block name")
    return key.replace("--", "-")


def _markers(key: str) -> tuple[str, str]:
    k = _clean(key)
    return f"<!-- begin: {k} -->", f"<!-- end: {k} -->"


def find(text: str, key: str) -> tuple[int, int] | None:
    """``(start, end)`` of the block's inside (between its two marker lines), or None."""
    begin, end = _markers(key)
    m = re.search(rf"^{re.escape(begin)}[ \t]*\n", text, flags=re.M)
    if m is None:
        return None
    e = re.compile(rf"^{re.escape(end)}[ \t]*$", flags=re.M).search(text, m.end())
    if e is None:
        raise ValueError(f"block {key!r}: found its begin marker but no {end!r}")
    return m.end(), e.start()


def get(text: str, key: str) -> str | None:
    """The inside of block ``key``, or None if the text has no such block."""
    span = find(text, key)
    return None if span is None else text[span[0]:span[1]]


def keys(text: str) -> list[str]:
    """Every block's key, in order of appearance (nested ones included)."""
    return re.findall(r"^<!-- begin: (.+?) -->[ \t]*$", text, flags=re.M)


def merge(text: str, key: str, body: str, parent: str | None = None) -> str:
    """``text`` with block ``key`` holding ``body``: replaced where the block exists, else
    appended at the end of block ``parent`` (which must exist) or of the text. Nothing outside
    the block changes."""
    body = body.rstrip("\n") + "\n"
    span = find(text, key)
    if span is not None:
        return text[:span[0]] + body + text[span[1]:]
    begin, end = _markers(key)
    block = f"{begin}\n{body}{end}\n"
    if parent is None:
        return text.rstrip("\n") + "\n\n" + block
    pspan = find(text, parent)
    if pspan is None:
        raise ValueError(f"parent block {parent!r} not found")
    inside = text[pspan[0]:pspan[1]]
    sep = "" if not inside or inside.endswith("\n\n") else "\n"
    return text[:pspan[1]] + sep + block + text[pspan[1]:]
