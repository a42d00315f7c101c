"""The one place where names that become paths, paths read from storage, and URLs that may
carry credentials are checked.

- :func:`check_name`: dataset names, model names, release ids, store names. A small allowed
  alphabet (letters, digits, ``.``, ``_``, ``-``), starting with a letter or digit, no path
  separators, no ``..``; at most 128 characters.
- :func:`safe_join`: join a relative name read from storage (a MANIFEST.json entry, a
  manifest's media path) to a destination folder, refusing absolute paths, ``..`` parts and
  anything that resolves outside the folder *before* a byte is written.
- :func:`check_url` / :func:`redact_url` / :func:`redact`: URLs with ``user:password@``
  (userinfo) are refused where they would be stored (YAML, pipeline parameters, tags) and
  redacted wherever a URL is printed or logged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit
from mavin_ops.errors import MavinError

__all__ = [
    "NAME_PATTERN",
    "BadParameter",
    "UnsafeName",
    "UnsafePath",
    "UnsafeURL",
    "check_name",
    "check_url",
    "redact",
    "redact_url",
    "safe_join",
]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnsafeName(MavinError, ValueError):
    """A name that would become a path is not in the allowed alphabet."""


class UnsafePath(MavinError, ValueError):
    """A relative path read from storage would land outside its destination folder."""


class UnsafeURL(MavinError, ValueError):
    """A URL carries credentials (userinfo) where it would be stored or shown."""


class BadParameter(MavinError, ValueError):
    """A parameter value no path, URL or name can be: a NUL byte, far too long, a broken URL."""


#: The longest text a release parameter may be (a path or URL is far shorter).
MAX_PARAMETER_CHARS = 4096


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a safe single path component, else raise :class:`UnsafeName`
    with a one-line reason naming ``what`` it is (``dataset name``, ``release id``, ...)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise UnsafeName(
            f"{what} {name!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, with no path separators and no '..'"
        )
    return name


def safe_join(root: str | os.PathLike, relative: str, what: str = "path") -> Path:
    """``root / relative`` for a ``relative`` name read from storage, refusing absolute paths,
    empty parts, ``..`` and anything (symlinks included) that resolves outside ``root``."""
    text = str(relative)
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if not text or text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", text) or not parts or any(p in ("..", "") for p in parts) or "\x00" in text:
        raise UnsafePath(f"{what} {relative!r} is not a plain relative path inside {root}; refusing to write or read it")
    base = Path(root).resolve()
    target = (base / Path(*parts)).resolve()
    if target != base and base not in target.parents:
        raise UnsafePath(f"{what} {relative!r} resolves outside {root}; refusing to write or read it")
    return base / Path(*parts)


def _has_userinfo(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return bool(parts.scheme) and "@" in (parts.netloc or "")


def check_url(url: str, where: str = "URL") -> str:
    """Refuse a URL with credentials in it (``scheme://user:pass@host``); they belong in the
    environment or a secret, never in YAML, parameters or tags."""
    if isinstance(url, str) and _has_userinfo(url):
        raise UnsafeURL(
            f"{where} {redact_url(url)} carries credentials in the URL; pass them through the environment "
            "or a Kubernetes secret instead (for example AWS_ACCESS_KEY_ID, MLFLOW_TRACKING_PASSWORD)"
        )
    return url


def redact_url(url: str) -> str:
    """``url`` with any userinfo replaced by ``***``."""
    if not isinstance(url, str) or not _has_userinfo(url):
        return url
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


#: ``scheme://userinfo@``: the userinfo runs to the last ``@`` before the path (a password may hold ``@``).
_URL_IN_TEXT = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/\s'\"]+)@")


def redact(text: str) -> str:
    """Every ``scheme://userinfo@`` inside free text (a log line, an argument list) redacted."""
    return _URL_IN_TEXT.sub(r"\1***@", text) if isinstance(text, str) else text


#: Pipeline parameters whose values become paths: the one list every entry point checks.
NAME_PARAMETERS = {"dataset_name": "dataset name", "model_name": "model name", "release_id": "release id", "store_name": "store name"}


def check_parameters(params: dict, where: str = "pipeline parameter") -> dict:
    """Check release-pipeline parameters wherever they enter (the local ``release``, the
    cluster ``submit`` / ``schedule``, a cluster profile): names that become paths against
    :func:`check_name` (an empty release id means "pick one"), and no value a URL with
    credentials. Returns ``params``."""
    for key, value in params.items():
        if key in NAME_PARAMETERS and not (key == "release_id" and value in ("", None)):
            check_name(value, f"{where} {key}: {NAME_PARAMETERS[key]}")
        if isinstance(value, str):
            if "\0" in value or len(value) > MAX_PARAMETER_CHARS:
                raise BadParameter(f"{where} {key}: a NUL byte or over {MAX_PARAMETER_CHARS} characters; pass a real path, URL or name")
            if "://" in value:
                try:
                    urlsplit(value).port
                except ValueError as exc:
                    raise BadParameter(f"{where} {key}: {redact_url(value)[:200]} is not a valid URL ({exc}); fix it") from None
            check_url(value, f"{where} {key}:")
    return params
