"""The model registry side of a release: register versions with their lineage, move the
``champion`` alias only for versions whose gate passed, keep an audit trail, roll back.

The truth is the platform's signed ledger (:mod:`mavin_ops.ledger`): every gate verdict,
registration and champion move is a record there, and every check reads it, never MLflow.
MLflow's model registry mirrors it for people: the ``champion`` alias, a version's tags and
one ``mavin.audit.<ledger record>`` tag per move on the registered model. :func:`verify`
compares the mirror with the ledger and names every difference (an alias moved in the MLflow
UI, a tag edited, a version deleted); :func:`repair` writes the mirror again from the ledger.

A version can become champion only if the ledger registered it after a passed gate that ran
against the champion of the moment (:func:`promote`); a rollback only returns to a version
whose gate passed. Promotion is serialized by a lock and compare-and-set: two concurrent
promotions from the same champion get exactly one winner, the other a
:class:`PromotionConflict`; the champion never moves to an older version except by
:func:`rollback`. A move is done once its ledger record is written; the alias follows (a
process killed in between leaves the alias behind, which :func:`verify` reports and the next
move or :func:`repair` puts right).

Lineage tags on a model version (read by ``mavin-ops lineage``, for people):
``mavin.gate`` (pass|stale), ``mavin.gate_report``, ``mavin.metrics_json``, ``mavin.release_id``,
``mavin.git_commit``, ``mavin.dataset_digest``, ``mavin.training_runs``,
``mavin.checkpoint_sha256``, ``mavin.triton_version``.
"""

from __future__ import annotations

import getpass
import json
import os
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mavin_ops import ledger, settings
from mavin_ops.reader import NotFound, reader
from mavin_ops.errors import MavinError

__all__ = [
    "ANY_CHAMPION",
    "AUDIT_PREFIX",
    "CHAMPION",
    "AuditRecord",
    "PromotionConflict",
    "PromotionError",
    "alias_version",
    "champion_metrics",
    "champion_triton_version",
    "champion_version",
    "history",
    "passed_gate",
    "promote",
    "record_gate",
    "record_registration",
    "register_version",
    "repair",
    "rollback",
    "verify",
]

CHAMPION = "champion"
AUDIT_PREFIX = "mavin.audit."
GATE_TAG = "mavin.gate"
TRITON_TAG = "mavin.triton_version"


def _mirrored_tags(reg: dict[str, Any]) -> dict[str, str]:
    """The champion version's MLflow tags that must say what its ledger registration says."""
    want = {GATE_TAG: "pass", TRITON_TAG: str(reg["triton_version"]), "mavin.release_id": str(reg.get("release", ""))}
    if reg.get("checkpoint_sha256"):
        want["mavin.checkpoint_sha256"] = str(reg["checkpoint_sha256"])
    return want


class PromotionError(MavinError, RuntimeError):
    """A promotion or rollback that is not allowed; the message says why and what to do."""


class PromotionConflict(PromotionError):
    """The champion changed between looking and promoting; re-check and retry."""


@dataclass(frozen=True)
class AuditRecord:
    """One champion move, as the ledger holds it (``ledger_seq``: its record number there)."""

    seq: int
    action: str  # promote | rollback
    model: str
    from_version: str | None
    to_version: str
    who: str
    when: str  # ISO 8601, UTC
    why: str
    gate_report: str
    ledger_seq: int = 0

    def line(self) -> str:
        return (
            f"#{self.seq} {self.when} {self.action:<8} {self.model} "
            f"v{self.from_version or '-'} -> v{self.to_version} by {self.who}: {self.why}"
        )


def _client():
    from mavin_ops import tracking

    return tracking.client()


def _who(who: str | None) -> str:
    if not who:
        try:
            who = os.environ.get("MAVIN_USER") or getpass.getuser()
        except Exception:
            who = "unknown"
    return _bounded(who, "who", 200)


def _bounded(text: str, what: str, limit: int) -> str:
    """Free text bound for a signed record (and MLflow's copy of it): one line, at most ``limit``."""
    if len(text) > limit or "\n" in text or "\0" in text:
        raise PromotionError(f"{what} must be one line of at most {limit} characters; say it shorter")
    return text


def _lock(model: str):
    """Serialize champion moves of one model on this machine (and on a shared MAVIN_HOME)."""
    return settings.home_lock(f"registry-{model}")


def _ledger(model: str) -> list[dict[str, Any]]:
    try:
        return ledger.read(model)
    except ledger.LedgerError as exc:
        raise PromotionError(str(exc)) from None


def register_version(model: str, source: str, *, run_id: str | None = None, tags: dict[str, Any] | None = None) -> str:
    """Register ``source`` (an artifact URI or path) as a new version of ``model`` in MLflow,
    carrying the lineage ``tags``. Returns the version number as a string. (The ledger learns
    of it through :func:`record_registration`; until then it cannot become champion.)"""
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


# --------------------------------------------------------------------------- gate and registration


def record_gate(model: str, *, release: str, verdict: str, gate_json: str | os.PathLike, metrics: str | os.PathLike,
                champion: str | None, champion_metrics_sha256: str = "", who: str | None = None) -> dict[str, Any]:
    """The gate step's verdict into the ledger: the sha256 of ``gate_json`` and of the
    ``metrics`` it judged, and the champion it compared against with the sha256 of that
    champion's metrics. The metrics are kept by content inside the home
    (``ledger/metrics/<sha256>.json``, on the shared volume on a cluster), where the next
    gate reads them if this version becomes champion."""
    from mavin_ops.data.manifest import atomic_writer

    data = Path(metrics).read_bytes()
    sha = ledger.sha256_bytes(data)
    kept = settings.home() / "ledger" / "metrics" / f"{sha}.json"
    if not kept.is_file() or ledger.sha256_bytes(kept.read_bytes()) != sha:
        kept.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(kept.parent, kept.name, "wb") as fh:
            fh.write(data)
    return ledger.append(
        model, "gate", _who(who), release=release, verdict=verdict,
        gate_sha256=ledger.sha256_bytes(Path(gate_json).read_bytes()), gate_json=settings.portable(Path(gate_json).resolve()),
        metrics=settings.portable(kept), metrics_sha256=sha,
        champion=None if champion in (None, "") else str(champion), champion_metrics_sha256=champion_metrics_sha256,
    )


def passed_gate(model: str, release: str, gate_json: str | os.PathLike) -> dict[str, Any]:
    """The ledger's passed ``gate`` record of ``release`` whose gate.json has these bytes;
    PromotionError when there is none (a gate.json written or edited outside the gate step)."""
    sha = ledger.sha256_bytes(Path(gate_json).read_bytes())
    for rec in reversed(_ledger(model)):
        if rec["kind"] == "gate" and rec.get("release") == release and rec.get("gate_sha256") == sha:
            if rec.get("verdict") != "pass":
                break
            return rec
    raise PromotionError(f"{model}: the ledger has no passed gate of release {release} with this gate.json ({gate_json}); "
                         "it was not written by the gate step, or was changed since: run the release again")


def record_registration(model: str, version: str, gate: dict[str, Any], *, triton_version: int | str,
                        checkpoint_sha256: str = "", who: str | None = None) -> dict[str, Any]:
    """Version ``version`` of ``model`` into the ledger, tied to its passed ``gate`` record,
    with what MLflow says of it (its source), so a model replaced in MLflow is seen."""
    mv = reader().model_version(model, str(version))
    return ledger.append(model, "register", _who(who), version=str(version), gate=gate["seq"], gate_sha256=gate["gate_sha256"],
                         release=gate.get("release", ""), triton_version=str(triton_version), checkpoint_sha256=checkpoint_sha256,
                         source=mv.source, run_id=mv.run_id)


def _passed(records: list[dict[str, Any]], model: str, version: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(registration, gate record) of ``version``; PromotionError unless its gate passed."""
    reg = ledger.registration(records, version)
    if reg is None:
        raise PromotionError(
            f"{model} v{version} cannot be champion: the ledger never registered it after a passed gate "
            f"(registered by hand, or its release failed); run a release that passes the gate"
        )
    gate = ledger.gate_record(records, reg)
    if gate is None or gate.get("verdict") != "pass" or gate.get("gate_sha256") != reg.get("gate_sha256"):
        raise PromotionError(f"{model} v{version} cannot be champion: its gate verdict in the ledger is not 'pass'")
    return reg, gate


STALE = "stale"


def mark_stale(model: str, version: str | int, why: str) -> None:
    """Show in MLflow that a version's gate ran against a champion that is no longer the
    champion (:func:`promote` refuses it by the ledger's gate record either way)."""
    c = _client()
    c.set_model_version_tag(model, str(version), GATE_TAG, STALE)
    c.set_model_version_tag(model, str(version), "mavin.gate_stale_reason", why)


# --------------------------------------------------------------------------- reading


def champion_version(model: str) -> str | None:
    """The champion as the ledger says (None: never promoted). PromotionError when the
    ledger cannot be trusted."""
    return ledger.champion(_ledger(model))


def alias_version(model: str, *, mlflow: bool = False) -> str | None:
    """The version behind MLflow's ``champion`` alias (a mirror, never trusted), or None
    (read without importing MLflow on the local store; ``mlflow``: through MLflow's client)."""
    try:
        return reader(mlflow=mlflow).model_version_by_alias(model, CHAMPION).version
    except NotFound:
        return None


def champion_triton_version(model: str) -> int | None:
    """The Triton version the ledger registered for the champion (None: no champion)."""
    records = _ledger(model)
    champ = ledger.champion(records)
    if champ is None:
        return None
    reg, _ = _passed(records, model, champ)
    return int(reg["triton_version"])


def champion_metrics(model: str, records: list[dict[str, Any]] | None = None) -> tuple[str, str, bytes] | None:
    """(version, where, bytes) of the metrics the champion's gate judged, read from inside
    the home and checked against the sha256 in the ledger; None when there is no champion.
    PromotionError, in one line, for anything else (a reference that leaves the home, a
    file changed since, a ledger that cannot be trusted). ``records``: the ledger, when the
    caller has read it already."""
    from mavin_ops.bounded import InputError, read_bytes

    records = _ledger(model) if records is None else records
    champ = ledger.champion(records)
    if champ is None:
        return None
    _, gate = _passed(records, model, champ)
    where = str(gate.get("metrics") or "")
    if not where.startswith(f"{settings.HOME_SCHEME}:/"):
        raise PromotionError(f"champion {model} v{champ}: its metrics ({reprlib.repr(where)}) are not inside the state folder; "
                             "the gate reads a champion's metrics only from there")
    try:
        data = read_bytes(settings.local_path(where), "a metrics.json")
    except (ValueError, OSError) as exc:  # InputError and a reference leaving the home are ValueErrors
        why = str(exc) if isinstance(exc, InputError) or not isinstance(exc, OSError) else (exc.strerror or type(exc).__name__)
        raise PromotionError(f"champion {model} v{champ}: cannot read its metrics {where}: {' '.join(why.split())[:200]}") from None
    if ledger.sha256_bytes(data) != gate.get("metrics_sha256"):
        raise PromotionError(f"champion {model} v{champ}: {where} is not the metrics its gate judged (sha256 differs from the ledger's): "
                             "it was changed since; restore it or run a release")
    return champ, where, data


def _audit(model: str, rec: dict[str, Any], n: int) -> AuditRecord:
    return AuditRecord(seq=n, action=rec["action"], model=model, from_version=rec.get("from"), to_version=str(rec["to"]),
                       who=str(rec["who"]), when=str(rec["when"]), why=str(rec.get("why", "")),
                       gate_report=str(rec.get("gate_report", "")), ledger_seq=rec["seq"])


def history(model: str, *, mlflow: bool = False) -> list[AuditRecord]:
    """The champion's moves, oldest first, numbered by position, from the ledger."""
    records = _ledger(model)
    if not records:
        try:
            reader(mlflow=mlflow).model_tags(model)
        except NotFound:
            raise PromotionError(f"no registered model '{model}'; register a version first") from None
    moves = [r for r in records if r["kind"] == "move"]
    return [_audit(model, r, n) for n, r in enumerate(moves, start=1)]


# --------------------------------------------------------------------------- moving the champion


def _mirror_key(rec: dict[str, Any]) -> str:
    return f"{AUDIT_PREFIX}{rec['seq']:08d}"


def _mirror_text(rec: dict[str, Any]) -> str:
    return json.dumps(rec, sort_keys=True)


def _mirror(model: str, records: list[dict[str, Any]]) -> list[str]:
    """Write MLflow's copy of the ledger where it differs (alias, the champion's gate and Triton
    tags, one audit tag per move; audit tags the ledger lacks are removed); what it changed."""
    from mlflow.exceptions import MlflowException

    c, changed = _client(), []
    champ = ledger.champion(records)
    have = {k: v for k, v in c.get_registered_model(model).tags.items() if k.startswith(AUDIT_PREFIX)}
    if champ is None and (have or alias_version(model, mlflow=True) is not None):
        raise PromotionError(f"{model}: the ledger is empty but MLflow has a champion alias or audit tags: the ledger may have been "
                             "deleted; restore the state folder's ledger/ and secrets/ from a backup")
    try:
        mv = c.get_model_version(model, champ) if champ is not None else None
    except MlflowException:
        raise PromotionError(f"the champion v{champ} of {model} was deleted from MLflow; roll back (`mavin-ops rollback {model} --reason ...`) or run a release") from None
    reg = ledger.registration(records, champ) if champ is not None else None
    if mv is not None and (reg.get("source") not in (None, mv.source) or reg.get("run_id") not in (None, mv.run_id or "")):
        raise PromotionError(f"the champion v{champ} of {model} in MLflow is not the version the ledger registered (its source or run differs): "
                             "the model was replaced in MLflow; roll back or restore MLflow from a backup")
    if alias_version(model, mlflow=True) != champ:
        if champ is None:
            c.delete_registered_model_alias(model, CHAMPION)
        else:
            c.set_registered_model_alias(model, CHAMPION, champ)
        changed.append(f"alias {CHAMPION} -> v{champ or '-'}")
    if mv is not None:
        for tag, value in _mirrored_tags(reg).items():
            if mv.tags.get(tag) != value:
                c.set_model_version_tag(model, champ, tag, value)
                changed.append(f"v{champ} {tag}={value}")
    want = {_mirror_key(r): _mirror_text(r) for r in records if r["kind"] == "move"}
    for key in sorted(set(have) - set(want)):
        c.delete_registered_model_tag(model, key)
        changed.append(f"removed {key[:60]}")
    for key, text in want.items():
        if have.get(key) != text:
            c.set_registered_model_tag(model, key, text)
            changed.append(f"wrote {key}")
    return changed


def _move(model: str, records: list[dict[str, Any]], action: str, frm: str | None, to: str, who: str | None, why: str,
          gate_report: str) -> AuditRecord:
    """Record the move in the ledger (from then on it is done), then mirror it in MLflow.
    ``records``: the ledger as the caller read it under the registry lock (moves are
    serialized by it; a gate or registration appended meanwhile changes nothing mirrored)."""
    rec = ledger.append(model, "move", _who(who), action=action, **{"from": frm, "to": to}, why=_bounded(why, "--reason", 2000),
                        gate_report=gate_report)
    records = [*records, rec]
    _mirror(model, records)
    return _audit(model, rec, sum(1 for r in records if r["kind"] == "move"))


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
    """Make ``version`` champion if the ledger registered it after a passed gate that ran
    against the current champion, and it is newer than the champion. ``expected_champion``
    (a version or None) makes the move a compare-and-set: if the champion is no longer what
    the caller saw, :class:`PromotionConflict`."""
    version = str(version)
    if not reason.strip():
        raise PromotionError("a promotion needs a reason (--reason); it goes to the audit trail")
    if not version.isdigit():
        raise PromotionError(f"{model} has no version {reprlib.repr(version)}; see `mavin-ops history {model}`")
    try:
        reader().model_version(model, version)
    except NotFound:
        raise PromotionError(f"{model} has no version {version}; see `mavin-ops history {model}`") from None
    with _lock(model):
        records = _ledger(model)
        _, gate = _passed(records, model, version)  # before the champion: a version without a passed gate says so
        current = ledger.champion(records)
        if expected_champion is not ANY_CHAMPION and (None if expected_champion is None else str(expected_champion)) != current:
            raise PromotionConflict(
                f"champion of {model} is v{current or '-'}, not v{expected_champion or '-'} as expected: another promotion won; re-check and retry"
            )
        if current is not None and int(version) <= int(current):
            raise PromotionConflict(
                f"{model} v{version} is not newer than the champion v{current}; the alias never moves backwards (use `mavin-ops rollback`)"
            )
        if gate.get("champion") != current:
            raise PromotionError(
                f"{model} v{version} cannot be promoted: its gate ran against another champion (v{gate.get('champion') or '-'}, "
                f"now v{current or '-'}); run a new release to gate it against the current one"
            )
        return _move(model, records, "promote", current, version, who, reason, str(gate.get("gate_json", "")))


def rollback(model: str, *, reason: str, who: str | None = None) -> AuditRecord:
    """Return the champion to the version it displaced when it was promoted, in one step,
    if that version's gate passed."""
    if not reason.strip():
        raise PromotionError("a rollback needs a reason (--reason); it goes to the audit trail")
    with _lock(model):
        records = _ledger(model)
        current = ledger.champion(records)
        if current is None:
            raise PromotionError(f"{model} has no champion to roll back")
        # (rollbacks are not undone by a second rollback: that would re-promote what was rolled back)
        previous = next((r.get("from") for r in reversed(records) if r["kind"] == "move" and r["action"] == "promote" and str(r["to"]) == current), None)
        if previous is None:
            raise PromotionError(f"{model} v{current} has no previous champion in the ledger; nothing to roll back to")
        _, gate = _passed(records, model, previous)
        try:
            reader().model_version(model, previous)
        except NotFound:
            raise PromotionError(f"{model} v{previous} was deleted from MLflow; it cannot be served again, nothing to roll back to") from None
        return _move(model, records, "rollback", current, previous, who, reason, str(gate.get("gate_json", "")))


# --------------------------------------------------------------------------- checking


def verify(model: str, *, mlflow: bool = False) -> list[str]:
    """What is wrong with ``model``'s champion, as one line each (empty: all is in order).

    The ledger must hold (every record signed and chained, the head pointer where it was
    left); MLflow must mirror it: the ``champion`` alias where the ledger's last move put it
    (an alias moved by hand, e.g. with the MLflow UI's "Promote" button, is not), the
    champion's version present with the gate and Triton version the ledger registered, and
    one unaltered audit tag per move, none added."""
    try:
        records = ledger.read(model)
    except ledger.LedgerError as exc:
        return [str(exc).split(": ", 1)[-1]]  # nothing after a broken record can be trusted
    store = reader(mlflow=mlflow)
    try:
        tags = store.model_tags(model)
    except NotFound:
        if not records:
            raise PromotionError(f"no registered model '{model}'; register a version first") from None
        tags = {}
    problems: list[str] = []
    fix = f"`mavin-ops verify {model} --repair` writes MLflow's copy again from the ledger"
    champ, alias = ledger.champion(records), alias_version(model, mlflow=mlflow)
    mv = None
    if champ is not None:
        try:
            mv = store.model_version(model, champ)
        except NotFound:  # (MLflow drops the alias with the version)
            problems.append(f"the champion v{champ} was deleted from MLflow; roll back (`mavin-ops rollback {model} --reason ...`) or run a release")
    if alias != champ and not (champ is not None and mv is None and alias is None):
        problems.append(
            f"the champion alias points at v{alias or '-'} but the ledger's champion is v{champ or '-'}: it was moved outside "
            f"mavin-ops (e.g. the MLflow UI) or a move was cut short; {fix}; move the champion with "
            f"`mavin-ops promote {model} VERSION --reason ...` or `mavin-ops rollback {model} --reason ...`"
        )
    if mv is not None:
        reg = ledger.registration(records, champ)
        for what, got in (("source", mv.source), ("run", mv.run_id)):
            key = "run_id" if what == "run" else what
            if reg.get(key) not in (None, got):
                problems.append(f"the champion v{champ} in MLflow is not the version the ledger registered: its {what} is "
                                f"{reprlib.repr(got)}, the ledger says {reprlib.repr(reg[key])} (the model was replaced in MLflow)")
        try:
            champion_metrics(model, records)
        except PromotionError as exc:
            problems.append(f"{exc}; the next gate cannot compare against the champion")
        for tag, want_tag in _mirrored_tags(reg).items():
            if mv.tags.get(tag) != want_tag:
                problems.append(f"the champion v{champ}'s tag {tag} is {reprlib.repr(mv.tags.get(tag))} but the ledger says {want_tag!r}: "
                                f"edited outside mavin-ops; {fix}")
    want = {_mirror_key(r): r for r in records if r["kind"] == "move"}
    have = {k: v for k, v in tags.items() if k.startswith(AUDIT_PREFIX)}
    for key in sorted(set(have) | set(want)):
        name = reprlib.repr(key) if len(key) > 60 else key
        if key not in want:
            problems.append(f"audit tag {name} is not in the ledger: added outside mavin-ops; {fix}")
        elif key not in have:
            problems.append(f"audit tag {name} (ledger record #{want[key]['seq']}) was deleted outside mavin-ops; {fix}")
        elif have[key] != _mirror_text(want[key]):
            problems.append(f"audit tag {name} differs from ledger record #{want[key]['seq']}: edited outside mavin-ops; {fix}")
    return problems


def repair(model: str) -> list[str]:
    """Write MLflow's copy of the ledger again where it differs; what was changed. The
    ledger itself is never changed: a ledger that does not hold is an error."""
    with _lock(model):
        return _mirror(model, _ledger(model))
