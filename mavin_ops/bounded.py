"""Reading the files a user hands the platform (release files, gate policies, evaluation
configs, cluster profiles, scene scripts) within bounds, so that a crafted file costs a
one-line error and never a traceback, a gigabyte of memory or its content on the screen:

- at most :data:`MAX_FILE_BYTES` are read (``/dev/zero`` included), and a folder is named as one;
- JSON nested deeper than Python's parser can follow is refused (``RecursionError`` caught);
- YAML is read without aliases (``*name``): an alias can repeat a node without limit (a
  300-byte "billion laughs" expands to gigabytes), and none of our files needs one;
- errors say where (line and column) and what, never the text around it.

Each function raises :class:`InputError` (a ValueError) with that line; callers re-raise it
as their own error type when they have one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from mavin_ops.errors import MavinError

__all__ = ["MAX_FILE_BYTES", "InputError", "load_json", "load_yaml", "lone_surrogate", "read_bytes", "read_text", "shown"]

#: The largest config, policy, profile or script file read: far above any real one.
MAX_FILE_BYTES = 8 << 20


class InputError(MavinError, ValueError):
    """A file the user gave cannot be read as what it should be; one line that names it."""


def shown(value: Any) -> str:
    """``value`` as an error may echo it: a scalar cut short (``reprlib``), a mapping or list
    by its kind and size only (it may hold a secret, or a whole file)."""
    import reprlib

    if isinstance(value, dict):
        return f"a mapping of {len(value)} key{'s' * (len(value) != 1)}"
    if isinstance(value, (list, tuple, set)):
        return f"a list of {len(value)} item{'s' * (len(value) != 1)}"
    r = reprlib.Repr()
    r.maxstring = r.maxother = 60
    return r.repr(value)


def read_bytes(path: str | os.PathLike, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path`` (``what`` it should be, e.g. "a gate policy"), at most ``limit``.
    FileNotFoundError passes through (callers word it)."""
    import stat

    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a folder; pass {what} (a file)")
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{p} is not a regular file (a device, pipe or socket); pass {what}")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{p} is larger than {limit} bytes, too large for {what}; pass the file itself")
    return data


def read_text(path: str | os.PathLike, what: str, limit: int = MAX_FILE_BYTES) -> str:
    """:func:`read_bytes` decoded as UTF-8."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: byte {exc.start} is not UTF-8 text; {what} is a text file") from None


def lone_surrogate(value: Any) -> str:
    """The first lone UTF-16 surrogate in a decoded JSON value, as its escape (``\\ud800``), or
    "" when there is none: JSON allows one, no file, table or terminal can hold it."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"\\u{ord(exc.object[exc.start]):04x}"
    return ""


def load_json(text: str | bytes, where: str) -> Any:
    """Parse JSON; errors name ``where`` and the line and column."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deep to read") from None
    except ValueError as exc:  # a number of over 4300 digits, bytes that are not UTF-8
        raise InputError(f"{where}: not valid JSON ({type(exc).__name__})") from None
    try:
        bad = lone_surrogate(value)
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deep to read") from None
    if bad:
        raise InputError(f"{where}: a string holds a lone UTF-16 surrogate ({bad}); write the character itself")
    return value


def _no_alias_loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """yaml.SafeLoader that refuses aliases (anchors alone are harmless)."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in this file; write the value out", mark)
            return super().compose_node(parent, index)

    return NoAliasLoader


def load_yaml(text: str | bytes, where: str) -> Any:
    """Parse YAML without aliases; errors name ``where``, the line and column and the problem,
    never the text around it."""
    import yaml

    try:
        return yaml.load(text, Loader=_no_alias_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = str(getattr(exc, "problem", None) or type(exc).__name__)
        problem = problem if len(problem) <= 120 else problem[:117] + "..."  # a tag or key can be long: never the whole text
        raise InputError(f"{where}: not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise InputError(f"{where}: YAML nested too deep to read") from None
    except ValueError as exc:  # a date like 2020-13-45, a number of over 4300 digits
        raise InputError(f"{where}: not valid YAML: a value cannot be read ({type(exc).__name__})") from None
