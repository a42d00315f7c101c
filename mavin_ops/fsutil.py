"""Folder replacement with no moment where the final name is missing.

:func:`replace_dir` puts a finished staging folder at its final name. When the final name
already exists, the two folders are swapped in one step with Linux ``renameat2(...,
RENAME_EXCHANGE)`` (through libc, ctypes), so a reader sees the old folder or the new one and
never nothing; the old content, now under the staging name, is deleted afterwards. Only where
that call does not exist (another OS, an old libc or kernel: ``ENOSYS``) or the file system
refuses it (``EINVAL``) does it fall back to two renames (old away, new in), which leaves a
short window without the final name.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import uuid
from pathlib import Path

__all__ = ["AT_FDCWD", "RENAME_EXCHANGE", "exchange", "fsync_dir", "replace_dir"]

AT_FDCWD = -100
RENAME_EXCHANGE = 2
_FALLBACK_ERRNOS = (errno.ENOSYS, errno.EINVAL)
_renameat2 = None
_looked_up = False


def _libc_renameat2():
    global _renameat2, _looked_up
    if not _looked_up:
        _looked_up = True
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).renameat2
            except (OSError, AttributeError):
                fn = None
            if fn is not None:
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                fn.restype = ctypes.c_int
            _renameat2 = fn
    return _renameat2


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> None:
    """Atomically swap the two existing paths ``a`` and ``b`` (``renameat2`` with
    ``RENAME_EXCHANGE``). Raises ``OSError(ENOSYS)`` where the call does not exist."""
    fn = _libc_renameat2()
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available on this system", str(a))
    if fn(AT_FDCWD, os.fsencode(os.fspath(a)), AT_FDCWD, os.fsencode(os.fspath(b)), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"renameat2(RENAME_EXCHANGE) failed: {os.strerror(code)}", os.fspath(a), None, os.fspath(b))


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder so a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def replace_dir(stage: str | os.PathLike, out: str | os.PathLike, *, trash_prefix: str | None = None) -> None:
    """Put the finished folder ``stage`` at ``out``; readers see the old folder or the new one,
    never a mix and (where ``renameat2`` works) never no folder. ``stage`` and ``out`` must be
    on the same file system (normally: ``stage`` is a hidden sibling of ``out``). The old
    folder is deleted; the parent folder is fsynced. ``trash_prefix`` names the folder the old
    content passes through on the fallback path (default ``.<name>.old-``)."""
    stage, out = Path(stage), Path(out)
    if not os.path.lexists(out):
        os.rename(stage, out)
        fsync_dir(out.parent)
        return
    try:
        exchange(stage, out)
    except OSError as exc:
        if exc.errno not in _FALLBACK_ERRNOS:
            raise
        trash = out.parent / f"{trash_prefix or f'.{out.name}.old-'}{uuid.uuid4().hex[:8]}"
        os.rename(out, trash)
        os.rename(stage, out)
        fsync_dir(out.parent)
        shutil.rmtree(trash, ignore_errors=True)
        return
    fsync_dir(out.parent)
    # ``stage`` now holds the old content under its hidden staging name: never read, delete it
    if os.path.isdir(stage) and not os.path.islink(stage):
        shutil.rmtree(stage, ignore_errors=True)
    else:
        os.unlink(stage)
