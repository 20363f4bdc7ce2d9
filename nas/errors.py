"""The exception types the command line turns into one ``error:`` line."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Union


class UserError(ValueError):
    """A mistake in the user's input (config, data, checkpoint, command line).

    The command line prints its message, without a traceback, and exits with
    status 2. The message names the problem and the fix. It is a ``ValueError``,
    so library callers that catch ``ValueError`` (what the library's constructors
    raise for bad arguments) catch it too.
    """


class AllRanksError(UserError):
    """A :class:`UserError` that every process of a torchrun launch raises alike; rank 0 reports
    it, so the command line leaves the other ranks' copies unprinted."""


# What to do when the machine refuses a write, by errno.
_FIXES = {
    errno.ENOSPC: "free space on that disk, or write to another one",
    errno.EDQUOT: "free space within your disk quota, or write to another disk",
    errno.EACCES: "write to a folder you may write to, or give yourself write permission on it",
    errno.EPERM: "write to a folder you may write to, or give yourself write permission on it",
    errno.EROFS: "that file system is mounted read-only; write to a writable disk",
    errno.ENOENT: "create its folder first, or give a path in an existing folder",
    errno.EISDIR: "give a file name, not a folder",
    errno.ENOTDIR: "a part of that path is a file, not a folder; choose another path",
}


class WriteError(UserError):
    """The machine refused to write ``path`` (no space, no permission, a read-only disk, ...).

    A :class:`UserError`, so it ends a command with one ``error:`` line; the command line adds
    whether ``--resume`` continues the run. ``errno`` is the refusal's.
    """

    def __init__(self, path: Union[str, Path], exc: OSError):
        self.path = Path(path)
        self.errno = exc.errno
        reason = exc.strerror.lower() if exc.strerror else str(exc)
        fix = _FIXES.get(exc.errno, "check that the path can be written")
        super().__init__(f"cannot write {path}: {reason}; {fix}")
