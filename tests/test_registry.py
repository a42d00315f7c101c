"""Promotion, rollback and the audit trail: the signed ledger is the truth, a real MLflow
registry (sqlite) its mirror."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest
from ledger_support import gated_version

from mavin_ops import ledger, registry
from mavin_ops.registry import PromotionConflict, PromotionError


def test_promote_moves_the_champion_in_the_ledger_and_mirrors_it():
    v0 = gated_version("m")
    r1 = registry.promote("m", v0, reason="first", who="alice")
    assert registry.champion_version("m") == registry.alias_version("m") == v0 and r1.from_version is None
    v1 = gated_version("m")
    r2 = registry.promote("m", v1, reason="better STA", who="bob")
    assert registry.champion_version("m") == registry.alias_version("m") == v1
    trail = registry.history("m")
    assert [(r.seq, r.action, r.from_version, r.to_version, r.who) for r in trail] == [
        (1, "promote", None, v0, "alice"),
        (2, "promote", v0, v1, "bob"),
    ]
    assert trail[1].why == "better STA" and trail[1].gate_report.endswith("gate.json") and r2 == trail[1]
    kinds = [r["kind"] for r in ledger.read("m")]
    assert kinds == ["gate", "register", "move", "gate", "register", "move"]
    assert registry.verify("m") == []


def test_a_version_without_a_passed_gate_in_the_ledger_is_never_promoted():
    failed = gated_version("m", verdict="fail")
    with pytest.raises(PromotionError, match="never registered it after a passed gate"):
        registry.promote("m", failed, reason="try")
    # MLflow's tag says pass: not trusted
    from mavin_ops.tracking import client

    client().set_model_version_tag("m", failed, "mavin.gate", "pass")
    with pytest.raises(PromotionError, match="never registered it after a passed gate"):
        registry.promote("m", failed, reason="try")
    assert registry.champion_version("m") is None and registry.alias_version("m") is None
    with pytest.raises(PromotionError, match="no version 9"):
        registry.promote("m", 9, reason="try")


def test_alias_never_moves_backwards_and_rollback_returns_previous():
    v0 = gated_version("m")
    v1 = gated_version("m")
    registry.promote("m", v0, reason="a")
    v2 = gated_version("m")
    registry.promote("m", v2, reason="c")
    with pytest.raises(PromotionConflict, match="never moves backwards"):
        registry.promote("m", v1, reason="b")
    rb = registry.rollback("m", reason="latency regression", who="ops")
    assert (rb.action, rb.from_version, rb.to_version) == ("rollback", v2, v0)
    assert registry.champion_version("m") == registry.alias_version("m") == v0
    # A second rollback does not re-promote what was rolled back.
    with pytest.raises(PromotionError, match="no previous champion"):
        registry.rollback("m", reason="again")
    assert registry.champion_version("m") == v0


def test_a_version_gated_against_another_champion_is_refused():
    v0 = gated_version("m")
    v1 = gated_version("m", against=None)  # gated before v0 became champion
    registry.promote("m", v0, reason="a")
    with pytest.raises(PromotionError, match=r"its gate ran against another champion \(v-, now v1\)"):
        registry.promote("m", v1, reason="b")


def test_compare_and_set_conflict():
    v0 = gated_version("m")
    v1 = gated_version("m")
    registry.promote("m", v0, reason="a")
    with pytest.raises(PromotionConflict, match="another promotion won"):
        registry.promote("m", v1, reason="b", expected_champion=None)
    assert registry.champion_version("m") == v0


def _promote_in_child(version: str, barrier, queue) -> None:
    barrier.wait()
    try:
        registry.promote("m", version, reason=f"race {version}", expected_champion="1")
        queue.put((version, "won"))
    except PromotionConflict as exc:
        queue.put((version, f"conflict: {exc}"))


def test_two_concurrent_promotions_exactly_one_wins():
    v0 = gated_version("m")
    registry.promote("m", v0, reason="base")
    v = [gated_version("m"), gated_version("m")]
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_promote_in_child, args=(ver, barrier, queue)) for ver in v]
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
    assert [r.to_version for r in registry.history("m")] == [v0, winners[0]]
    assert registry.verify("m") == []


def _append_many(n: int, barrier) -> None:
    barrier.wait()
    for i in range(n):
        ledger.append("m", "gate", "writer", release=f"r{i}", verdict="fail")


def test_two_writers_at_once_keep_one_chain():
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_append_many, args=(15, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert [r["seq"] for r in ledger.read("m")] == list(range(1, 31))


def test_cli_promote_history_rollback(capsys):
    from mavin_ops.cli import main

    v0 = gated_version("m")
    assert main(["promote", "m", v0, "--reason", "first", "--who", "alice"]) == 0
    v1 = gated_version("m")
    assert main(["promote", "m", v1, "--reason", "second", "--who", "bob", "--expect-champion", v0]) == 0
    assert main(["rollback", "m", "--reason", "bad latency", "--who", "ops"]) == 0
    capsys.readouterr()
    assert main(["history", "m"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"m: champion v{v0}"
    assert "rollback" in out[3] and f"v{v1} -> v{v0}" in out[3] and "bad latency" in out[3]
    # A conflicting promotion is a one-line error, exit 2.
    assert main(["promote", "m", v1, "--reason", "x", "--expect-champion", "none"]) == 2
    assert "another promotion won" in capsys.readouterr().err


def test_serve_follows_the_champion_through_a_rollback_and_never_serves_the_newest(capsys):
    from mavin_ops.cli import UserError, _champion_triton_version, main

    registry.register_version("m", "/c", tags={})
    with pytest.raises(UserError, match="no champion in the ledger"):
        _champion_triton_version("m")
    v0 = gated_version("m", triton=10)
    registry.promote("m", v0, reason="a")
    v1 = gated_version("m", triton=11)
    registry.promote("m", v1, reason="b")
    assert _champion_triton_version("m") == 11
    registry.rollback("m", reason="regression")
    assert _champion_triton_version("m") == 10


def _promote_then_die(version: str) -> None:
    """In a forked child: promote, SIGKILL-ing this process when the alias is about to move
    (after the ledger's record), as a crash or ``kill -9`` would."""
    import os
    import signal

    from mlflow.tracking import MlflowClient

    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)

    MlflowClient.set_registered_model_alias = die
    registry.promote("m", version, reason="killed mid-promotion", who="crash")


def test_a_process_killed_mid_promotion_leaves_the_ledger_true_and_the_mirror_repairable(capsys):
    from mavin_ops.cli import main

    v0 = gated_version("m")
    registry.promote("m", v0, reason="base")
    v1 = gated_version("m")
    child = mp.get_context("fork").Process(target=_promote_then_die, args=(v1,))
    child.start()
    child.join(60)
    assert child.exitcode == -9
    # The ledger's record is the move: it happened; the alias lags, and verify says so.
    assert [r.to_version for r in registry.history("m")] == [v0, v1]
    assert registry.champion_version("m") == v1 and registry.alias_version("m") == v0
    assert any("a move was cut short" in p for p in registry.verify("m"))
    capsys.readouterr()
    assert main(["verify", "m", "--repair"]) == 0
    out = capsys.readouterr().out
    assert f"repaired alias champion -> v{v1}" in out and registry.alias_version("m") == v1
    assert registry.rollback("m", reason="undo").to_version == v0


def test_verify_of_an_unknown_model_is_one_line(capsys):
    from mavin_ops.cli import main

    assert main(["verify", "nosuch"]) == 2
    assert "no registered model 'nosuch'" in capsys.readouterr().err


def test_verify_catches_an_alias_moved_by_hand_and_serving_refuses(capsys):
    from mlflow.tracking import MlflowClient

    from mavin_ops import settings
    from mavin_ops.cli import UserError, _champion_triton_version, main

    v0 = gated_version("m", triton=10)
    registry.promote("m", v0, reason="a")
    v1 = gated_version("m", triton=11)
    registry.promote("m", v1, reason="b")
    hand = gated_version("m", verdict="fail", triton=12)
    assert registry.verify("m") == [] and main(["verify", "m"]) == 0
    c = MlflowClient(settings.tracking_uri())
    # The MLflow UI's "Promote": the alias moves to a version whose gate failed; the ledger did not move it.
    c.set_registered_model_alias("m", "champion", hand)
    problems = registry.verify("m")
    assert problems and "moved outside mavin-ops" in problems[0] and f"ledger's champion is v{v1}" in problems[0]
    capsys.readouterr()
    assert main(["verify", "m", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
    with pytest.raises(UserError, match="moved outside mavin-ops.*--trust-alias"):
        _champion_triton_version("m")
    assert _champion_triton_version("m", trust_alias=True) == 12  # the operator's explicit call
    # Put back from the ledger: in order again.
    assert main(["verify", "m", "--repair"]) == 0
    assert registry.alias_version("m") == v1 and _champion_triton_version("m") == 11


_RECORD = {"action": "promote", "model": "m", "to": "1", "who": "x", "when": "t", "why": "y", "gate_report": ""}


@pytest.mark.parametrize("body", ["not json {", "[1, 2]", json.dumps(_RECORD), "[" * 100_000])
def test_a_crafted_audit_tag_is_named_by_verify_never_read_by_history_and_serving_refuses(capsys, body):
    """An audit tag written by hand (not JSON, a record with a recomputed look, nested 100,000
    deep) is MLflow's copy, never trusted: `history` reads the ledger and is unchanged,
    `verify` names the tag (exit 1), serving refuses the champion in one line."""
    from mlflow.tracking import MlflowClient

    from mavin_ops import settings
    from mavin_ops.cli import main

    v0 = gated_version("m")
    registry.promote("m", v0, reason="a")
    MlflowClient(settings.tracking_uri()).set_registered_model_tag("m", f"{registry.AUDIT_PREFIX}99999999-forged", body)
    capsys.readouterr()
    assert main(["history", "m"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["verify", "m"]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith("m: audit tag mavin.audit.99999999-forged is not in the ledger") and "\n" not in out
    assert main(["serve", "--name", "m"]) == 2
    err = capsys.readouterr().err.strip()
    assert "audit tag" in err and "\n" not in err and "--trust-alias" in err
