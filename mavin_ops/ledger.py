"""The platform's audit ledger: the source of truth for promotion.

MLflow can be written by anyone with access to it (its UI moves aliases and edits tags), so
nothing there is trusted for a promotion. The ledger is the platform's own record, one per
model, under the state folder::

    <home>/ledger/<model>.jsonl           one signed record per line, append-only
    <home>/secrets/heads/<model>.head     the head pointer: the last record's number and MAC,
                                          signed, in the private folder beside the default key

Records (``kind``):

- ``gate``: a release's gate verdict, with the sha256 of its ``gate.json``, of the metrics it
  judged (and where they are), and of the champion's metrics it compared against;
- ``register``: a model version, tied to the passed ``gate`` record it was registered after
  (with the Triton version it serves and its checkpoint's sha256);
- ``move``: the ``champion`` moved (``promote`` or ``rollback``), from which version to which,
  by whom and why.

Every record carries ``prev`` (the previous record's MAC; the first one's is :data:`GENESIS`)
and ``mac``, an HMAC-SHA256 over the rest under a key MLflow never sees: ``$MAVIN_LEDGER_KEY``
(on a cluster, a Kubernetes secret the profile maps to it), ``$MAVIN_LEDGER_KEY_FILE`` (a mounted
secret file), or ``<home>/secrets/ledger.key``, created 0600 on first use.
The head pointer anchors the other end, so a deleted last record, or a whole ledger deleted,
is seen too. Without the key,
no edit, insertion, deletion or reordering of records goes unnoticed: :func:`read` raises
:class:`LedgerError` naming the first record that does not hold. What it cannot see: someone
who holds the key, or who can write to ``secrets/`` and puts back a complete older copy of both
files (keep them on storage that keeps versions if that matters).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from mavin_ops import settings
from mavin_ops.errors import MavinError

__all__ = ["GENESIS", "KEY_ENV", "KEY_VALUE_ENV", "KINDS", "LedgerError", "append", "champion", "gate_record", "key_path", "read", "registration", "sha256_bytes"]

KEY_ENV = "MAVIN_LEDGER_KEY_FILE"
KEY_VALUE_ENV = "MAVIN_LEDGER_KEY"
#: The ``prev`` of a ledger's first record: a record put before it, or a first record
#: deleted, breaks the chain there.
GENESIS = "genesis"
KINDS = ("gate", "register", "move")
#: A ledger's largest size read (some 100,000 records).
MAX_LEDGER_BYTES = 64 << 20


class LedgerError(MavinError, RuntimeError):
    """The ledger (or its key) cannot be trusted as it is; one line that names the record."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_path() -> Path:
    env = os.environ.get(KEY_ENV)
    return Path(env) if env else settings.home() / "secrets" / "ledger.key"


def _key(create: bool) -> bytes:
    """The signing key: ``$MAVIN_LEDGER_KEY`` (a cluster profile maps a Kubernetes secret to it),
    else the key file; the default key file is created (0600) on first use."""
    from mavin_ops.bounded import InputError, read_bytes

    if os.environ.get(KEY_VALUE_ENV):
        key = os.environ[KEY_VALUE_ENV].strip().encode()
        if len(key) < 32:
            raise LedgerError(f"{KEY_VALUE_ENV} is shorter than 32 bytes; use a longer random secret")
        return key
    path, mounted = key_path(), bool(os.environ.get(KEY_ENV))
    if not path.exists():
        if mounted:
            raise LedgerError(f"{KEY_ENV}={path}: no such file; mount the ledger key there (a secret of at least 32 random bytes)")
        if not create:  # a new key would make every record look forged
            raise LedgerError(f"the ledger key {path} is missing but ledgers exist; restore the key from a backup of the state folder")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # two first writers: one key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
    if not mounted and path.stat().st_mode & 0o077:
        raise LedgerError(f"the ledger key {path} can be read by others (mode {path.stat().st_mode & 0o777:o}); run `chmod 600 {path}`")
    try:
        key = read_bytes(path, "the ledger key", limit=4096).strip()
    except InputError as exc:
        raise LedgerError(str(exc)) from None
    if len(key) < 32:
        raise LedgerError(f"the ledger key {path} is shorter than 32 bytes; use a longer random secret")
    return key


def _paths(model: str) -> tuple[Path, Path]:
    """The ledger and its head pointer. The head lies beside the default key, in the private
    ``secrets/`` folder: whoever can change it could as well read the key, so neither
    deleting the ledger nor putting back an older copy of it goes unnoticed otherwise."""
    from mavin_ops.safety import check_name

    check_name(model, "model name")
    return settings.home() / "ledger" / f"{model}.jsonl", settings.home() / "secrets" / "heads" / f"{model}.head"


_HEX = re.compile(r"[0-9a-f]{64}")


def _mac(key: bytes, body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _head_sig(key: bytes, model: str, seq: int, mac: str) -> str:
    return hmac.new(key, f"head\n{model}\n{seq}\n{mac}".encode(), hashlib.sha256).hexdigest()


def read(model: str) -> list[dict[str, Any]]:
    """Every record of ``model``'s ledger, oldest first, each checked (MAC, number, chain,
    head pointer); :class:`LedgerError` names the first that does not hold. A model with no
    ledger yet has none."""
    from mavin_ops.bounded import InputError, load_json, read_bytes

    path, head_path = _paths(model)
    if not os.path.lexists(path) and not os.path.lexists(head_path):
        return []
    where = f"{model}: the ledger {path}"

    def broken(what: str) -> LedgerError:
        return LedgerError(f"{where}: {what}: it was changed without the platform's key; restore it from a backup")

    if path.is_symlink() or head_path.is_symlink():
        raise broken("or its head pointer is a symbolic link")
    if not path.exists():
        raise broken("is missing but its head pointer is there (deleted)")
    key = _key(create=False)
    try:
        raw = read_bytes(path, "a ledger", MAX_LEDGER_BYTES)
    except InputError as exc:
        raise broken(f"cannot be read ({' '.join(str(exc).split())[:200]})") from None
    # Every record ends with a newline; bytes after the last one are a write cut short (a full
    # disk, a crash), kept out of the chain. They count only if the head pointer names them.
    complete, _, torn = raw.rpartition(b"\n")
    try:
        lines = complete.decode("utf-8").split("\n") if complete or raw.endswith(b"\n") else []
    except UnicodeDecodeError as exc:
        raise broken(f"cannot be read (byte {exc.start} is not UTF-8)") from None
    records: list[dict[str, Any]] = []
    prev = GENESIS
    for n, line in enumerate(lines, start=1):
        try:
            rec = load_json(line[:1_000_000], f"line {n}")
        except InputError:
            raise broken(f"line {n} is not a record") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("mac"), str) or not _HEX.fullmatch(rec["mac"]):
            raise broken(f"line {n} is not a signed record")
        body = {k: v for k, v in rec.items() if k != "mac"}
        if not hmac.compare_digest(_mac(key, body), rec["mac"]):
            raise broken(f"record #{n} does not carry the platform's signature (edited or forged)")
        if rec.get("seq") != n or rec.get("prev") != prev:
            raise broken(f"record #{n} does not follow record #{n - 1} (one was deleted, inserted or moved)")
        if rec.get("model") != model or rec.get("kind") not in KINDS:
            raise broken(f"record #{n} belongs to another ledger")
        records.append(rec)
        prev = rec["mac"]
    try:
        head = load_json(read_bytes(head_path, "a ledger head pointer", 4096), "head")
    except FileNotFoundError:
        raise broken("has no head pointer (deleted)") from None
    except InputError:
        raise broken("has an unreadable head pointer") from None
    seq, mac, sig = (head.get("seq"), head.get("mac"), head.get("sig")) if isinstance(head, dict) else (None, None, None)
    if not (type(seq) is int and 0 < seq < 1 << 62 and all(isinstance(x, str) and _HEX.fullmatch(x) for x in (mac, sig))
            and hmac.compare_digest(_head_sig(key, model, seq, mac), sig)):
        raise broken("has a head pointer the platform did not sign")
    if seq > len(records):
        cut = " (the last one cut short)" if torn else ""
        raise broken(f"ends at record #{len(records)}{cut} but its head pointer says #{seq} (records deleted from the end)")
    if seq and records[seq - 1]["mac"] != mac:
        raise broken(f"record #{seq} is not the one the head pointer names")
    # Records past the head carry the key's signature: an append whose head update was cut short.
    return records


def _drop_torn_tail(fd: int) -> None:
    """Cut bytes after the ledger's last newline (a write cut short, which :func:`read` left
    out of the chain) before the next record goes on."""
    size = os.fstat(fd).st_size
    keep = os.pread(fd, size, 0).rfind(b"\n") + 1  # (read() has checked the file: at most MAX_LEDGER_BYTES)
    if keep < size:
        os.ftruncate(fd, keep)


def append(model: str, kind: str, who: str, **fields: Any) -> dict[str, Any]:
    """Append a signed record of ``kind`` to ``model``'s ledger (after checking the whole
    ledger: nothing is added to one that was tampered with) and move the head pointer;
    returns the record."""
    from mavin_ops.data.manifest import atomic_writer

    if kind not in KINDS:
        raise ValueError(f"ledger record kind must be one of {KINDS}, got {kind!r}")
    path, head_path = _paths(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    head_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with settings.home_lock(f"ledger-{model}"):
        records = read(model)
        key = _key(create=not any(head_path.parent.glob("*.head")))  # the first ledger of the home makes the key
        body = {
            **fields,
            "seq": len(records) + 1,
            "prev": records[-1]["mac"] if records else GENESIS,
            "kind": kind,
            "model": model,
            "who": who,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        record = {**body, "mac": _mac(key, body)}
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        _drop_torn_tail(fd)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        head = {"seq": record["seq"], "mac": record["mac"], "sig": _head_sig(key, model, record["seq"], record["mac"])}
        with atomic_writer(head_path.parent, head_path.name) as out:
            json.dump(head, out)
    return record


# --------------------------------------------------------------------------- queries


def champion(records: list[dict[str, Any]]) -> str | None:
    """The version the ledger's last move made champion (None: never promoted)."""
    moves = [r for r in records if r["kind"] == "move"]
    return str(moves[-1]["to"]) if moves else None


def registration(records: list[dict[str, Any]], version: str) -> dict[str, Any] | None:
    """The ``register`` record of ``version``, or None when the platform never registered it."""
    return next((r for r in reversed(records) if r["kind"] == "register" and str(r.get("version")) == str(version)), None)


def gate_record(records: list[dict[str, Any]], registered: dict[str, Any]) -> dict[str, Any] | None:
    """The ``gate`` record a registration names (None if it names none)."""
    seq = registered.get("gate")
    found = records[seq - 1] if isinstance(seq, int) and 0 < seq <= len(records) else None
    return found if found is not None and found["kind"] == "gate" else None
