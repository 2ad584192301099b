"""Numeric columns of a large CSV file, read in chunks: memory linear in the rows kept.

A whole-file ``pandas.read_csv`` followed by a Python ``float()`` per cell holds every cell as
a Python object (a 200 MB one-column file passed 1.2 GB); here pandas' C parser reads
``chunk_rows`` rows at a time straight into float64, only the named columns, and each chunk is
checked (numbers, finite) before the next is read, and copied into one array sized by a first
count of the lines: the values kept are 8 bytes a row and column, plus one chunk's parse.

Errors are ``ValueError`` s whose message starts with the option that named the file or the
column (``--csv``, ``--input``, ``--time-column``), and name the row as the file counts it
(the header is row 1).
"""

from __future__ import annotations

import csv
import os
import sys
from typing import NamedTuple

import numpy as np

CHUNK_ROWS = 1 << 16
# Files at least this large print a progress line per tenth read (to stderr).
PROGRESS_BYTES = 16 << 20


class NumericColumns(NamedTuple):
    """What :func:`read_numeric_columns` read."""

    values: np.ndarray  # (N, F) float64
    times: np.ndarray | None  # (N,) float64 or datetime64; None without a time column
    time_format: str | None  # the strftime format the dates were written in, when guessed


def _file(path, option: str) -> str:
    if path is None:
        raise ValueError(f"{option}: expected a file name")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{option}: no such file {path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"{option}: {path!r} is not a regular file")
    return path


def read_header(path, option: str = "--csv") -> list[str]:
    """The column names of the CSV file's first row."""
    path = _file(path, option)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
            has_rows = header is not None and f.readline().strip() != ""
    except UnicodeDecodeError as e:
        raise ValueError(f"{option}: {path!r} is not a readable CSV file (not UTF-8 text: "
                         f"byte {e.start}: {e.reason})") from None
    except csv.Error as e:
        raise ValueError(f"{option}: {path!r} is not a readable CSV file ({e})") from None
    if not header or not any(h.strip() for h in header):
        raise ValueError(f"{option}: {path!r} is empty")
    if not has_rows:
        raise ValueError(f"{option}: {path!r} has a header but no rows")
    return header


def _count_lines(path, block: int = 1 << 20) -> int:
    """Newlines in the file after the header's (an upper bound on its rows)."""
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(block):
            count += chunk.count(b"\n")
    return max(count - 1, 0)


def _first_bad_cell(path, name: str, skip: int, option: str):
    """``(row, text)`` of the first cell of column ``name`` that is not a finite number, from
    data row ``skip`` on (the slow path, taken once, only on a bad file)."""
    import pandas as pd

    offset = 0
    with pd.read_csv(path, usecols=[name], dtype=str, keep_default_na=False,
                     chunksize=CHUNK_ROWS) as reader:
        for chunk in reader:
            if offset + len(chunk) > skip:
                text = chunk[name].to_numpy(object)
                values = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(np.float64)
                bad = np.flatnonzero(~np.isfinite(values[max(0, skip - offset):]))
                if len(bad):
                    i = int(bad[0]) + max(0, skip - offset)
                    return offset + i, text[i]
            offset += len(chunk)
    return None


def _times(raw, name: str, row0: int, kind: str | None, fmt: str | None, option: str):
    """``(times, kind, format)`` of one chunk of the time column: numbers, else dates (in
    the format guessed from the first cell, which every later chunk must follow)."""
    import pandas as pd
    from pandas.tseries.api import guess_datetime_format

    numbers = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
    if kind in (None, "numbers") and np.isfinite(numbers).all():
        return numbers, "numbers", None
    if kind in (None, "dates"):
        if kind is None and len(raw):
            fmt = guess_datetime_format(str(raw.iloc[0]))
        try:
            return pd.to_datetime(raw, format=fmt).to_numpy(), "dates", fmt
        except (ValueError, TypeError):
            pass
    raise ValueError(f"{option}: column {name!r} holds neither numbers nor dates throughout "
                     f"(rows {row0 + 2} to {row0 + len(raw) + 1})")


def read_numeric_columns(path, columns, *, option: str = "--csv", time_column: str | None = None,
                         time_option: str = "--time-column", chunk_rows: int = CHUNK_ROWS,
                         progress: bool | None = None):
    """:class:`NumericColumns` ``(values (N, len(columns)) float64, times (N,) or None,
    time_format)`` of a CSV file with a header row.

    Args:
      path: the CSV file.
      columns: the names of the numeric columns to read (every cell a finite number).
      option: the option that named the file (and the columns), for error messages.
      time_column: also read this column as numbers or dates (``times``; None: not read).
      chunk_rows: rows parsed at a time.
      progress: print a progress line per tenth of the file to stderr (None: for files of
        at least :data:`PROGRESS_BYTES`).

    Raises:
      ValueError: a missing or unreadable file, a missing column, a cell that is not a finite
        number (its row and text named), or a time column of neither numbers nor dates.
    """
    import pandas as pd

    path = _file(path, option)
    header = read_header(path, option)
    columns = list(columns)
    for names, opt in ((columns, option), ([time_column] if time_column else [], time_option)):
        missing = [c for c in names if c not in header]
        if missing:
            raise ValueError(f"{opt}: no column {missing[0]!r} in {path!r}; its columns are "
                             f"{', '.join(header)}")
    size = os.path.getsize(path)
    if progress is None:
        progress = size >= PROGRESS_BYTES
    wanted = list(dict.fromkeys([*columns, *([time_column] if time_column else [])]))
    dtypes = {c: np.float64 for c in columns if c != time_column}
    if time_column is not None:
        dtypes[time_column] = str
    # The rows are counted first (a fast pass over the bytes) so that the values go straight
    # into one array: no list of chunks to concatenate (which would double the peak).
    values = np.empty((_count_lines(path), len(columns)), np.float64)
    time_parts, kind, fmt, rows, shown = [], None, None, 0, 0
    with open(path, "rb") as f, pd.read_csv(f, usecols=wanted, dtype=dtypes,
                                            chunksize=chunk_rows, engine="c") as reader:
        try:
            for chunk in reader:
                block = np.empty((len(chunk), len(columns)), np.float64)
                for j, name in enumerate(columns):
                    col = chunk[name]
                    block[:, j] = (col.to_numpy(np.float64) if name != time_column else
                                   pd.to_numeric(col, errors="coerce").to_numpy(np.float64))
                bad = np.flatnonzero(~np.isfinite(block).all(1))
                if len(bad):
                    i = int(bad[0])
                    j = int(np.flatnonzero(~np.isfinite(block[i]))[0])
                    _raise_bad(path, columns[j], rows + i, option)
                if rows + len(block) > len(values):  # a last line without its newline
                    values = np.concatenate([values, np.empty((len(block), len(columns)))])
                values[rows:rows + len(block)] = block
                if time_column is not None:
                    t, kind, fmt = _times(chunk[time_column], time_column, rows, kind, fmt,
                                          time_option)
                    time_parts.append(t)
                rows += len(chunk)
                done = f.tell() / max(size, 1)
                if progress and int(done * 10) > shown and done < 1.0:
                    shown = int(done * 10)
                    print(f"reading {path}: {min(done, 1.0):.0%} ({rows:,} rows)",
                          file=sys.stderr, flush=True)
        except ValueError as e:
            if str(e).startswith(option) or str(e).startswith(time_option):
                raise
            # pandas could not parse a cell as float: find and name it (slow path).
            for name in columns:
                found = _first_bad_cell(path, name, rows, option)
                if found is not None:
                    _raise_bad(path, name, found[0], option, found[1])
            raise ValueError(f"{option}: {path!r} is not a readable CSV file "
                             f"({str(e).splitlines()[0]})") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise ValueError(f"{option}: {path!r} is not a readable CSV file "
                             f"({str(e).splitlines()[0]})") from None
    if progress:
        print(f"reading {path}: 100% ({rows:,} rows)", file=sys.stderr, flush=True)
    values = values[:rows]  # blank lines are not rows
    times = None
    if time_column is not None:
        times = np.concatenate(time_parts) if len(time_parts) != 1 else time_parts[0]
    return NumericColumns(values, times, fmt)


def _raise_bad(path, name, row, option, text=None):
    if text is None:
        found = _first_bad_cell(path, name, row, option)
        row, text = found if found is not None else (row, "")
    shown = repr(text) if text.strip() else "nan (an empty cell)"
    raise ValueError(f"{option}: column {name!r} of {path!r} is not numeric: row {row + 2} "
                     f"holds {shown} (expected a number)")


__all__ = ["NumericColumns", "read_numeric_columns", "read_header", "CHUNK_ROWS", "PROGRESS_BYTES"]
