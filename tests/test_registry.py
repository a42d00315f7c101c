"""Promotion, rollback and the audit trail on a real MLflow registry (sqlite)."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from mavin_ops import registry
from mavin_ops.registry import PromotionConflict, PromotionError


def register(n_pass: int = 3, verdicts=None) -> list[str]:
    verdicts = verdicts or ["pass"] * n_pass
    return [
        registry.register_version("m", f"/tmp/ckpt-{i}", tags={"mavin.gate": v, "mavin.gate_report": f"/r/{i}.json"})
        for i, v in enumerate(verdicts)
    ]


def test_promote_moves_alias_and_appends_audit():
    v = register(2)
    r1 = registry.promote("m", v[0], reason="first", who="alice")
    assert registry.champion_version("m") == v[0] and r1.from_version is None
    r2 = registry.promote("m", v[1], reason="better STA", who="bob")
    assert registry.champion_version("m") == v[1]
    trail = registry.history("m")
    assert [(r.seq, r.action, r.from_version, r.to_version, r.who) for r in trail] == [
        (1, "promote", None, v[0], "alice"),
        (2, "promote", v[0], v[1], "bob"),
    ]
    assert trail[1].why == "better STA" and trail[1].gate_report == "/r/1.json" and r2 == trail[1]


def test_failed_or_missing_gate_blocks_promotion():
    v = register(verdicts=["fail"])
    with pytest.raises(PromotionError, match="gate verdict is 'fail'"):
        registry.promote("m", v[0], reason="try")
    assert registry.champion_version("m") is None
    with pytest.raises(PromotionError, match="no version 9"):
        registry.promote("m", 9, reason="try")


def test_alias_never_moves_backwards_and_rollback_returns_previous():
    v = register(3)
    registry.promote("m", v[0], reason="a")
    registry.promote("m", v[2], reason="c")
    with pytest.raises(PromotionConflict, match="never moves backwards"):
        registry.promote("m", v[1], reason="b")
    rb = registry.rollback("m", reason="latency regression", who="ops")
    assert (rb.action, rb.from_version, rb.to_version) == ("rollback", v[2], v[0])
    assert registry.champion_version("m") == v[0]
    # A second rollback does not re-promote what was rolled back.
    with pytest.raises(PromotionError, match="no previous champion"):
        registry.rollback("m", reason="again")
    assert registry.champion_version("m") == v[0]


def test_compare_and_set_conflict():
    v = register(2)
    registry.promote("m", v[0], reason="a")
    with pytest.raises(PromotionConflict, match="another promotion won"):
        registry.promote("m", v[1], reason="b", expected_champion=None)
    assert registry.champion_version("m") == v[0]


def _promote_in_child(version: str, barrier, queue) -> None:
    barrier.wait()
    try:
        registry.promote("m", version, reason=f"race {version}", expected_champion="1")
        queue.put((version, "won"))
    except PromotionConflict as exc:
        queue.put((version, f"conflict: {exc}"))


def test_two_concurrent_promotions_exactly_one_wins():
    v = register(3)
    registry.promote("m", v[0], reason="base")
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_promote_in_child, args=(ver, barrier, queue)) for ver in (v[1], v[2])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = dict(queue.get(timeout=5) for _ in procs)
    winners = [ver for ver, outcome in results.items() if outcome == "won"]
    assert len(winners) == 1, results
    loser = next(ver for ver in results if ver not in winners)
    assert "another promotion won" in results[loser]
    assert registry.champion_version("m") == winners[0]
    assert [r.to_version for r in registry.history("m")] == [v[0], winners[0]]


def test_cli_promote_history_rollback(capsys):
    from mavin_ops.cli import main

    v = register(2)
    assert main(["promote", "m", v[0], "--reason", "first", "--who", "alice"]) == 0
    assert main(["promote", "m", v[1], "--reason", "second", "--who", "bob", "--expect-champion", v[0]]) == 0
    assert main(["rollback", "m", "--reason", "bad latency", "--who", "ops"]) == 0
    capsys.readouterr()
    assert main(["history", "m"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"m: champion v{v[0]}"
    assert "rollback" in out[3] and f"v{v[1]} -> v{v[0]}" in out[3] and "bad latency" in out[3]
    # A conflicting promotion is a one-line error, exit 2.
    assert main(["promote", "m", v[1], "--reason", "x", "--expect-champion", "none"]) == 2
    assert "another promotion won" in capsys.readouterr().err


def test_serve_follows_the_champion_through_a_rollback():
    from mavin_ops.cli import _champion_triton_version

    assert _champion_triton_version("m") is None
    v = [registry.register_version("m", f"/c{i}", tags={"mavin.gate": "pass", "mavin.triton_version": str(10 + i)}) for i in range(2)]
    registry.promote("m", v[0], reason="a")
    registry.promote("m", v[1], reason="b")
    assert _champion_triton_version("m") == 11
    registry.rollback("m", reason="regression")
    assert _champion_triton_version("m") == 10


def _promote_then_die(version: str, die_on: str) -> None:
    """In a forked child: promote, SIGKILL-ing this process at ``die_on`` (the alias move, or
    the confirming audit write after it), as a crash or ``kill -9`` would."""
    import os
    import signal

    from mlflow.tracking import MlflowClient

    if die_on == "alias":
        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)

        MlflowClient.set_registered_model_alias = die
    else:
        real = MlflowClient.set_registered_model_tag
        seen: list[str] = []

        def tag_then_die(self, name, key, value):
            if key in seen:  # the second write of the same record: the confirmation
                os.kill(os.getpid(), signal.SIGKILL)
            seen.append(key)
            return real(self, name, key, value)

        MlflowClient.set_registered_model_tag = tag_then_die
    registry.promote("m", version, reason="killed mid-promotion", who="crash")


@pytest.mark.parametrize("die_on", ["alias", "confirm"])
def test_a_process_killed_mid_promotion_leaves_a_true_audit_record(die_on):
    v = register(2)
    registry.promote("m", v[0], reason="base")
    child = mp.get_context("fork").Process(target=_promote_then_die, args=(v[1], die_on))
    child.start()
    child.join(60)
    assert child.exitcode == -9
    trail = registry.history("m")
    assert [r.to_version for r in trail] == [v[0], v[1]]  # the record was written before the alias moved
    last = trail[-1]
    if die_on == "alias":
        assert registry.champion_version("m") == v[0] and last.state == "aborted" and "[aborted" in last.line()
        # nothing to roll back to from an aborted move; promoting again works and is recorded
        registry.promote("m", v[1], reason="again")
        assert [r.state for r in registry.history("m")] == ["done", "aborted", "done"]
    else:
        assert registry.champion_version("m") == v[1] and last.state == "done"
        # a later move settles it as done for good: it is not re-read as "aborted" once the
        # champion moves on, and rollbacks still find what it displaced
        v3 = registry.register_version("m", "/tmp/ckpt-3", tags={"mavin.gate": "pass"})
        registry.promote("m", v3, reason="next")
        assert [r.state for r in registry.history("m")] == ["done", "done", "done"]
        assert registry.rollback("m", reason="undo v3").to_version == v[1]
        assert registry.rollback("m", reason="undo v2").to_version == v[0]


def test_two_writers_reading_the_same_trail_both_keep_their_record(monkeypatch):
    """Sequence numbers are not taken from len(history)+1: two writers that read the same
    trail at once write two records, not one over the other."""
    v = register(1)
    registry.promote("m", v[0], reason="base")
    a = registry._record("m", "promote", v[0], v[0], "a", "writer a", "")
    b = registry._record("m", "promote", v[0], v[0], "b", "writer b", "")
    registry._append("m", a)
    registry._append("m", b)
    trail = registry.history("m")
    assert len(trail) == 3 and {r.why for r in trail[1:]} == {"writer a", "writer b"}
    assert [r.seq for r in trail] == [1, 2, 3]


def test_verify_of_an_unknown_model_is_one_line(capsys):
    from mavin_ops.cli import main

    assert main(["verify", "nosuch"]) == 2
    assert "no registered model 'nosuch'" in capsys.readouterr().err


def test_verify_catches_an_alias_moved_by_hand_and_an_edited_trail_and_serving_refuses(capsys):
    import json

    from mlflow.tracking import MlflowClient

    from mavin_ops import settings
    from mavin_ops.cli import UserError, _champion_triton_version, main

    v = [registry.register_version("m", f"/c{i}", tags={"mavin.gate": g, "mavin.triton_version": str(10 + i)})
         for i, g in enumerate(["pass", "pass", "fail"])]
    registry.promote("m", v[0], reason="a")
    registry.promote("m", v[1], reason="b")
    assert registry.verify("m") == [] and main(["verify", "m"]) == 0
    trail = registry.history("m")
    assert trail[1].prev == registry.record_digest(trail[0])  # a chain
    c = MlflowClient(settings.tracking_uri())
    # The MLflow UI's "Promote": the alias moves to a version whose gate failed, with no record.
    c.set_registered_model_alias("m", "champion", v[2])
    problems = registry.verify("m")
    assert any("moved outside mavin-ops" in p for p in problems) and any("no passed gate" in p for p in problems)
    capsys.readouterr()
    assert main(["verify", "m", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
    with pytest.raises(UserError, match="moved outside mavin-ops.*--trust-alias"):
        _champion_triton_version("m")
    assert _champion_triton_version("m", trust_alias=True) == 12
    # Put back through the platform: in order again.
    c.set_registered_model_alias("m", "champion", v[1])
    assert registry.verify("m") == []
    # An audit record edited in the UI (who moved it, and why) breaks the chain.
    key = f"{registry.AUDIT_PREFIX}{trail[0].key}"
    body = json.loads(c.get_registered_model("m").tags[key])
    c.set_registered_model_tag("m", key, json.dumps({**body, "who": "someone-else"}))
    assert registry.verify("m") == ["audit record #2 does not follow #1: the trail was edited outside mavin-ops"]


_RECORD = {"action": "promote", "model": "m", "to_version": "1", "who": "x", "when": "t", "why": "y", "gate_report": ""}


@pytest.mark.parametrize("body", ["not json {", "[1, 2]", '{"action": "promote"}', json.dumps({**_RECORD, "to_version": 1}),
                                  json.dumps({**_RECORD, "action": "bogus"}), json.dumps({**_RECORD, "state": "anything"}),
                                  json.dumps({**_RECORD, "model": "other"}), "[" * 100_000])
def test_a_crafted_audit_tag_is_one_line_for_history_verify_and_serve(capsys, body):
    """An audit tag written by hand (not JSON, not a record, fields missing or of the wrong
    kind, nested 100,000 deep): `history` says which one in a line (exit 2), `verify` names it
    (exit 1), and serving refuses the champion in one line, never a traceback."""
    from mlflow.tracking import MlflowClient

    from mavin_ops import settings
    from mavin_ops.cli import main

    v = register(1)
    registry.promote("m", v[0], reason="a")
    MlflowClient(settings.tracking_uri()).set_registered_model_tag("m", f"{registry.AUDIT_PREFIX}99999999999999999999-forged", body)
    capsys.readouterr()
    assert main(["history", "m"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mavin-ops: error: m: audit record mavin.audit.99999999999999999999-forged ") and "\n" not in err, err[:500]
    assert main(["verify", "m"]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith("m: audit record mavin.audit.99999999999999999999-forged ") and "edited outside mavin-ops" in out
    assert main(["serve", "--name", "m"]) == 2
    err = capsys.readouterr().err.strip()
    assert "audit record" in err and "\n" not in err and "--trust-alias" in err
