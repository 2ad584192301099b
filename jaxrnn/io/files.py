"""Files written so that a crash at any moment leaves the last good one, and files read only
when they are what they claim to be.

* :func:`atomic_write`: a temporary file beside the target (its name holds the writer's pid),
  flushed and fsync-ed, then ``os.replace`` d into place and the directory fsync-ed;
* :func:`remove_stale_temporaries`: the temporaries of writers that were killed;
* :func:`read_regular`: the bytes of a regular file of a known (or bounded) size; a symlink to
  ``/dev/zero``, a FIFO or a directory is refused before a byte is read.
"""

from __future__ import annotations

import glob
import os
import stat
import tempfile

TMP_PREFIXES = (".checkpoint-", ".params-")  # .params-: left by older versions


def as_path(value, argname: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(
            f"{argname}: expected a path (str or os.PathLike), got "
            f"{type(value).__name__} {value!r}"
        )
    return os.fspath(value)


def fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def owner_pid(name: str, prefix: str) -> int | None:
    """The writer's pid in a temporary's name ``<prefix><pid>-...``, or None."""
    head = name[len(prefix):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def is_stale(name: str, prefix: str) -> bool:
    """A temporary whose writer is gone (or of a naming without a pid)."""
    pid = owner_pid(name, prefix)
    return pid is None or pid == os.getpid() or not pid_alive(pid)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Delete the temporary files of saves whose process was killed mid-write.

    A temporary file is named ``.checkpoint-<pid>-<random>.tmp`` (or ``.params-...``); it is
    stale when process ``<pid>`` no longer exists (a live writer's file is left alone). Files
    of the older naming without a pid are stale by definition. Returns the removed paths."""
    directory = as_path(directory, "directory")
    removed = []
    for prefix in TMP_PREFIXES:
        for path in glob.glob(os.path.join(glob.escape(directory), prefix + "*.tmp")):
            name = os.path.basename(path)
            pid = owner_pid(name, prefix)
            if pid is not None and pid != os.getpid() and pid_alive(pid):
                continue
            try:
                os.unlink(path)
                removed.append(path)
            except FileNotFoundError:  # another cleaner was first
                pass
    return removed


def atomic_write(path: str, data: bytes, *, prefix: str, before_replace=None) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync it, call ``before_replace()``
    (a rotation), then move it into place with ``os.replace`` and fsync the directory. On any
    failure the temporary file is removed and ``path`` is untouched."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{prefix}{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def check_regular(path: str, *, size: int | None = None, what: str = "file") -> int:
    """The size of ``path`` after checking that it is a regular file (symlinks followed) of
    ``size`` bytes when given. Raises ValueError naming the file otherwise (a device, FIFO or
    directory would block a reader or never end)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path!r} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path!r} is not a regular file (a device, FIFO, directory or "
                         f"a link to one); refusing to read it")
    if size is not None and st.st_size != size:
        raise ValueError(f"{what} {path!r} has {st.st_size} bytes where {size} were written "
                         f"(truncated or replaced)")
    return st.st_size


def read_regular(path: str, *, size: int | None = None, max_size: int | None = None,
                 what: str = "file") -> bytes:
    """The bytes of the regular file ``path``: exactly ``size`` bytes when given, at most
    ``max_size``. The file is opened without blocking and checked on its open handle too, so a
    FIFO or device swapped in after the check is refused as well."""
    check_regular(path, size=size, what=what)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{what} {path!r} is not a regular file; refusing to read it")
        if size is not None and st.st_size != size:
            raise ValueError(f"{what} {path!r} has {st.st_size} bytes where {size} were "
                             f"written (truncated or replaced)")
        if max_size is not None and st.st_size > max_size:
            raise ValueError(f"{what} {path!r} has {st.st_size} bytes, more than the "
                             f"{max_size} such a file can hold; refusing to read it")
        want = st.st_size if size is None else size
        chunks, got = [], 0
        while got < want:
            block = os.read(fd, min(want - got, 1 << 24))
            if not block:
                break
            chunks.append(block)
            got += len(block)
        return b"".join(chunks)
    finally:
        os.close(fd)


__all__ = ["atomic_write", "remove_stale_temporaries", "read_regular", "check_regular",
           "fsync_dir", "TMP_PREFIXES"]
