"""The one root of the errors a user can act on.

Every error that means "your input, file, flag, store or state is not as it must be; here is
what to do" derives from :class:`MavinError`, next to the built-in kind it always was
(``ValueError``, ``RuntimeError``, ...) so code that caught that still does. The command line
catches :class:`MavinError` once, prints its first line and exits 2. Anything else is a bug,
and keeps its traceback."""

from __future__ import annotations

__all__ = ["MavinError"]


class MavinError(Exception):
    """An error the user can act on; its message is one line that says what and where."""
