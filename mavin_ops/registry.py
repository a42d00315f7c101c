"""The model registry side of a release: register versions with their lineage, move the
``champion`` alias only for versions whose gate passed, keep an audit trail, roll back.

Registry: MLflow's model registry. The audit trail lives on the registered model itself as
tags ``mavin.audit.<key>`` (one JSON record each), so it travels with the registry and needs
no other store. A key is the write time in nanoseconds plus a random suffix, so two writers
never collide; the sequence number a reader sees is the record's position in key order.
Every alias move is recorded *before* the alias moves (state ``pending``) and confirmed after
(``done``): a process killed in between leaves a record, which :func:`history` reads as
``done`` when the alias did move (it is the newest record and the champion is its target) and
``aborted`` otherwise. Promotion is serialized by a lock and compare-and-set on the alias: two
concurrent promotions from the same champion get exactly one winner, the other a
:class:`PromotionConflict`; the alias never moves to an older version except by
:func:`rollback`.

Lineage tags on a model version (read by ``mavin-ops lineage``):
``mavin.gate`` (pass|fail), ``mavin.gate_report``, ``mavin.metrics_json``, ``mavin.release_id``,
``mavin.git_commit``, ``mavin.dataset_digest``, ``mavin.training_runs``,
``mavin.checkpoint_sha256``, ``mavin.triton_version``.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator

from mavin_ops import settings
from mavin_ops.reader import NotFound, reader

__all__ = [
    "ANY_CHAMPION",
    "AUDIT_PREFIX",
    "CHAMPION",
    "AuditRecord",
    "PromotionConflict",
    "PromotionError",
    "champion_version",
    "history",
    "promote",
    "register_version",
    "rollback",
    "verify",
]

CHAMPION = "champion"
AUDIT_PREFIX = "mavin.audit."
GATE_TAG = "mavin.gate"


class PromotionError(RuntimeError):
    """A promotion or rollback that is not allowed; the message says why and what to do."""


class AuditRecordError(PromotionError):
    """An audit tag mavin-ops did not write as it reads (edited by hand); names the tag."""


class PromotionConflict(PromotionError):
    """The champion changed between looking and promoting; re-check and retry."""


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    action: str  # promote | rollback
    model: str
    from_version: str | None
    to_version: str
    who: str
    when: str  # ISO 8601, UTC
    why: str
    gate_report: str
    key: str = ""  # the tag suffix it is stored under
    state: str = "done"  # pending (written, alias not yet confirmed) | done | aborted (alias never moved)
    #: sha256 of the previous record's content (:func:`record_digest`): the trail is a chain, so a
    #: record edited or removed in the MLflow UI no longer matches the one after it.
    prev: str = ""

    def line(self) -> str:
        note = "" if self.state == "done" else f" [{self.state}: the process stopped before the alias moved]"
        return (
            f"#{self.seq} {self.when} {self.action:<8} {self.model} "
            f"v{self.from_version or '-'} -> v{self.to_version} by {self.who}: {self.why}{note}"
        )


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(settings.tracking_uri())


def _who(who: str | None) -> str:
    if who:
        return who
    try:
        return os.environ.get("MAVIN_USER") or getpass.getuser()
    except Exception:
        return "unknown"


@contextlib.contextmanager
def _lock(model: str) -> Iterator[None]:
    """Serialize alias moves of one model on this machine (and on a shared MAVIN_HOME)."""
    folder = settings.home() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"registry-{model}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def register_version(model: str, source: str, *, run_id: str | None = None, tags: dict[str, Any] | None = None) -> str:
    """Register ``source`` (an artifact URI or path) as a new version of ``model`` carrying
    the lineage ``tags``. Returns the version number as a string."""
    c = _client()
    from mlflow.exceptions import MlflowException

    try:
        c.create_registered_model(model, description="mavin-ops release model")
    except MlflowException:
        pass  # exists
    # Paths under the state folder are stored relative to it (mavin-home:/...): it can move.
    mv = c.create_model_version(
        model, settings.portable(source), run_id=run_id,
        tags={k: settings.portable(str(v)) for k, v in (tags or {}).items() if v is not None},
    )
    return str(mv.version)


STALE = "stale"


def mark_stale(model: str, version: str | int, why: str) -> None:
    """Take back a version's gate pass because the champion it was gated against is no
    longer the champion: :func:`promote` then refuses it like a failed gate."""
    c = _client()
    c.set_model_version_tag(model, str(version), GATE_TAG, STALE)
    c.set_model_version_tag(model, str(version), "mavin.gate_stale_reason", why)


def champion_version(model: str, *, mlflow: bool = False) -> str | None:
    """The version behind the ``champion`` alias, or None (read without importing MLflow on
    the local store; ``mlflow``: through MLflow's client)."""
    try:
        return reader(mlflow=mlflow).model_version_by_alias(model, CHAMPION).version
    except NotFound:
        return None


def history(model: str, *, mlflow: bool = False) -> list[AuditRecord]:
    """The audit trail of ``model``, oldest first, numbered by position. A record left
    ``pending`` by a killed process reads as ``done`` if the alias did move to it (it is the
    newest record and the champion is its target), else ``aborted``."""
    try:
        tags = reader(mlflow=mlflow).model_tags(model)
    except NotFound:
        raise PromotionError(f"no registered model '{model}'; register a version first") from None
    fields = set(AuditRecord.__dataclass_fields__)
    raw = sorted((k[len(AUDIT_PREFIX):], v) for k, v in tags.items() if k.startswith(AUDIT_PREFIX))
    records = [replace(_parse_record(model, key, text, fields), seq=n, key=key) for n, (key, text) in enumerate(raw, start=1)]
    if any(r.state == "pending" for r in records):
        current = champion_version(model, mlflow=mlflow)
        records = [
            replace(r, state="done" if (r is records[-1] and r.to_version == current) else "aborted") if r.state == "pending" else r
            for r in records
        ]
    return records


#: What every audit record must say (the rest has defaults).
_REQUIRED = ("action", "model", "to_version", "who", "when", "why", "gate_report")


def _parse_record(model: str, key: str, text: str, fields: set[str]) -> AuditRecord:
    """One audit tag as a record, or PromotionError naming it (a tag edited outside mavin-ops:
    not JSON, not a mapping, fields missing or of the wrong kind)."""
    from mavin_ops.bounded import InputError, load_json

    def bad(why: str) -> AuditRecordError:
        return AuditRecordError(f"{model}: audit record {AUDIT_PREFIX}{key[:40]} {why}: the trail was edited outside mavin-ops")

    try:
        body = load_json(text[:100_000], "tag")
    except InputError:
        raise bad("is not JSON") from None
    if not isinstance(body, dict):
        raise bad("is not a record")
    missing = [f for f in _REQUIRED if not isinstance(body.get(f), str)]
    if missing or not all(isinstance(body.get(f), (str, type(None))) for f in fields - {"seq"}):
        raise bad(f"lacks {', '.join(missing)}" if missing else "has a field of the wrong kind")
    if body["action"] not in ("promote", "rollback") or body.get("state", "done") not in ("pending", "done", "aborted"):
        raise bad("has an action or state mavin-ops never writes")
    if body["model"] != model:
        raise bad("belongs to another model")
    return AuditRecord(**{"seq": 0, **{k: v for k, v in body.items() if k in fields}})


def _append(model: str, record: AuditRecord) -> None:
    body = {k: v for k, v in asdict(record).items() if k not in ("seq", "key")}
    _client().set_registered_model_tag(model, f"{AUDIT_PREFIX}{record.key}", json.dumps(body))


def _settle(model: str) -> None:
    """Write down how a pending record left by a killed process ended (done or aborted),
    under the lock and before the next move, so a later move cannot change its reading."""
    stored = reader().model_tags(model)
    for record in history(model):
        if json.loads(stored.get(f"{AUDIT_PREFIX}{record.key}", "{}")).get("state") == "pending":
            _append(model, record)  # history() resolved it; same key, now final


def _numbered(model: str, record: AuditRecord) -> AuditRecord:
    return next((r for r in history(model) if r.key == record.key), record)


def _new_key() -> str:
    """A tag key that sorts by write time and cannot collide between writers."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _move_alias(model: str, record: AuditRecord) -> AuditRecord:
    """Record the move (pending), move the alias, confirm the record (done)."""
    _append(model, record)
    _client().set_registered_model_alias(model, CHAMPION, record.to_version)
    done = replace(record, state="done")
    _append(model, done)
    return done


def record_digest(record: AuditRecord) -> str:
    """sha256 of what a record says (everything but its position, key and state)."""
    import hashlib

    body = {k: v for k, v in asdict(record).items() if k not in ("seq", "key", "state")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _record(model: str, action: str, frm: str | None, to: str, who: str | None, why: str, gate_report: str) -> AuditRecord:
    trail = history(model)
    return AuditRecord(
        prev=record_digest(trail[-1]) if trail else "",
        seq=0,
        action=action,
        model=model,
        from_version=frm,
        to_version=to,
        who=_who(who),
        when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        why=why,
        gate_report=gate_report,
        key=_new_key(),
        state="pending",
    )


#: ``expected_champion`` default: move the alias whatever the current champion is.
ANY_CHAMPION = object()


def promote(
    model: str,
    version: str | int,
    *,
    reason: str,
    who: str | None = None,
    expected_champion: Any = ANY_CHAMPION,
) -> AuditRecord:
    """Move ``champion`` to ``version`` if its gate passed and it is newer than the current
    champion. ``expected_champion`` (a version or None) makes the move a compare-and-set:
    if the champion is no longer what the caller saw, :class:`PromotionConflict`."""
    from mlflow.exceptions import MlflowException

    version = str(version)
    if not reason.strip():
        raise PromotionError("a promotion needs a reason (--reason); it goes to the audit trail")
    c = _client()
    try:
        mv = c.get_model_version(model, version)
    except MlflowException:
        raise PromotionError(f"{model} has no version {version}; see `mavin-ops history {model}`") from None
    verdict = mv.tags.get(GATE_TAG)
    if verdict == STALE:
        raise PromotionError(
            f"{model} v{version} cannot be promoted: its gate ran against another champion "
            f"({mv.tags.get('mavin.gate_stale_reason', 'the champion changed')}); run a new release to gate it against the current one"
        )
    if verdict != "pass":
        raise PromotionError(
            f"{model} v{version} cannot be promoted: its gate verdict is {verdict or 'missing'!r}; only a version whose gate passed can become champion"
        )
    with _lock(model):
        _settle(model)
        current = champion_version(model)
        if expected_champion is not ANY_CHAMPION and (None if expected_champion is None else str(expected_champion)) != current:
            raise PromotionConflict(
                f"champion of {model} is v{current or '-'}, not v{expected_champion or '-'} as expected: another promotion won; re-check and retry"
            )
        if current is not None and int(version) <= int(current):
            raise PromotionConflict(
                f"{model} v{version} is not newer than the champion v{current}; the alias never moves backwards (use `mavin-ops rollback`)"
            )
        record = _move_alias(model, _record(model, "promote", current, version, who, reason, mv.tags.get("mavin.gate_report", "")))
    return _numbered(model, record)


def rollback(model: str, *, reason: str, who: str | None = None) -> AuditRecord:
    """Return ``champion`` to the version it held before the current one, in one step."""
    if not reason.strip():
        raise PromotionError("a rollback needs a reason (--reason); it goes to the audit trail")
    with _lock(model):
        _settle(model)
        current = champion_version(model)
        if current is None:
            raise PromotionError(f"{model} has no champion to roll back")
        trail = history(model)
        # The version the current champion displaced when it was promoted (rollbacks are not
        # undone by a second rollback: that would re-promote what was rolled back).
        previous = next(
            (r.from_version for r in reversed(trail) if r.action == "promote" and r.state == "done" and r.to_version == current), None
        )
        if previous is None:
            raise PromotionError(f"{model} v{current} has no previous champion in the audit trail; nothing to roll back to")
        mv = _client().get_model_version(model, previous)
        record = _move_alias(model, _record(model, "rollback", current, previous, who, reason, mv.tags.get("mavin.gate_report", "")))
    return _numbered(model, record)


def verify(model: str, *, mlflow: bool = False) -> list[str]:
    """What is wrong with ``model``'s champion, as one line each (empty: all is in order).

    The champion alias must sit where the audit trail's last move put it (an alias moved by
    hand, e.g. with the MLflow UI's "Promote" button, has no record), the champion's gate must
    have passed, and the audit trail must be an unbroken chain (a record edited or removed
    outside mavin-ops breaks it)."""
    problems: list[str] = []
    try:
        trail = history(model, mlflow=mlflow)
    except AuditRecordError as exc:
        return [str(exc).split(": ", 1)[-1]]  # an unreadable record: nothing after it can be trusted
    current = champion_version(model, mlflow=mlflow)
    for before, record in zip(trail, trail[1:]):
        if record.prev and record.prev != record_digest(before):
            problems.append(f"audit record #{record.seq} does not follow #{before.seq}: the trail was edited outside mavin-ops")
    moves = [r for r in trail if r.state == "done"]
    expected = moves[-1].to_version if moves else None
    if current != expected:
        problems.append(
            f"the champion alias points at v{current or '-'} but the audit trail's last move is to v{expected or '-'}: "
            f"it was moved outside mavin-ops (e.g. the MLflow UI); move it with `mavin-ops promote {model} VERSION --reason ...` "
            f"or `mavin-ops rollback {model} --reason ...`, which check the gate and record the move"
        )
    if current is not None:
        try:
            verdict = reader(mlflow=mlflow).model_version(model, current).tags.get(GATE_TAG)
        except NotFound:
            verdict = None
        if verdict != "pass":
            problems.append(f"the champion v{current} has no passed gate (gate: {verdict or 'missing'}); run a release that passes the gate")
    return problems
