"""The Rotten Tomatoes movie-review snippets of Hutto & Gilbert (ICWSM 2014), for sentiment.

10,605 sentences, each with the mean of 10 human ratings on [-4, 4]. They ship in the source
archive of ``vaderSentiment==3.3.2`` as ``additional_resources/hutto_ICWSM_2014.tar.gz``, in
``hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt``: one ``id<TAB>score<TAB>sentence`` per
line (UTF-8, CRLF). A sentence is positive when its score is > 0 (49.4% are).

Reference: C. J. Hutto and E. Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment
Analysis of Social Media Text", ICWSM 2014.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxrnn.datasets.sdist import sdist_path

PACKAGE, VERSION = "vaderSentiment", "3.3.2"
INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"


class Snippets(NamedTuple):
    texts: list[str]  # N sentences
    scores: np.ndarray  # (N,) float64 mean human rating in [-4, 4]
    labels: np.ndarray  # (N,) int32, 1 where score > 0


def parse_ground_truth(text: str) -> Snippets:
    """Parse ``id<TAB>score<TAB>sentence`` lines; blank lines are skipped.

    Raises:
      ValueError: a line without three tab-separated fields or with a non-numeric score (the
        message gives the line number and content).
    """
    texts, scores = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(
                f"text: line {lineno} expected 'id<TAB>score<TAB>sentence' (3 fields), "
                f"got {len(fields)}: {line[:80]!r}"
            )
        try:
            score = float(fields[1])
        except ValueError:
            raise ValueError(
                f"text: line {lineno} has a non-numeric score {fields[1]!r}"
            ) from None
        texts.append(fields[2].strip())
        scores.append(score)
    scores = np.asarray(scores, np.float64)
    return Snippets(texts, scores, (scores > 0).astype(np.int32))


def read_inner_archive(inner: bytes) -> Snippets:
    """Read the snippets from the bytes of ``hutto_ICWSM_2014.tar.gz``."""
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as tar:
        try:
            member = tar.extractfile(MEMBER)
        except KeyError:
            member = None
        if member is None:
            raise ValueError(f"inner archive: no member {MEMBER!r}")
        return parse_ground_truth(member.read().decode("utf-8"))


def read_sdist(path) -> Snippets:
    """Read the snippets from the ``vaderSentiment`` source archive at ``path`` (the inner
    archive is read in memory; nothing is extracted to disk)."""
    with tarfile.open(path, mode="r:gz") as tar:
        inner = next((m for m in tar.getmembers() if m.name.endswith(INNER_ARCHIVE)), None)
        if inner is None:
            raise ValueError(f"{path}: no member ending in {INNER_ARCHIVE!r}")
        return read_inner_archive(tar.extractfile(inner).read())


def load_rotten_tomatoes(*, download: bool = False, root: str | Path | None = None) -> Snippets:
    """All 10,605 snippets, from the cached ``vaderSentiment==3.3.2`` source archive.

    Args:
      download: fetch the archive with ``pip download`` if it is not cached yet.
      root: the cache directory (default ``$JAXRNN_DATA`` or ``~/.cache/jaxrnn``).
    """
    return read_sdist(sdist_path(PACKAGE, VERSION, download=download, root=root))


__all__ = ["Snippets", "parse_ground_truth", "read_inner_archive", "read_sdist",
           "load_rotten_tomatoes"]
