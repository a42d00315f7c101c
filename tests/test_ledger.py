"""The signed ledger against someone without its key: every edit, insertion, deletion or
reordering of its records, and every edit of MLflow's copy (alias, tags, versions), is named
by `verify`, and `serve`, `promote` and `rollback` refuse what it did not put there."""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import pytest
from ledger_support import gated_version

from mavin_ops import ledger, registry, settings
from mavin_ops.cli import main


@pytest.fixture
def trail():
    """m: v1 promoted, v2 promoted over it (triton versions 10 and 11); the ledger and its head pointer."""
    v1 = gated_version("m", triton=10)
    registry.promote("m", v1, reason="first")
    v2 = gated_version("m", triton=11)
    registry.promote("m", v2, reason="second")
    return settings.home() / "ledger" / "m.jsonl", settings.home() / "secrets" / "heads" / "m.head"


def _lines(path):
    return path.read_text().splitlines()


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def _resign_without_key(rec: dict) -> str:
    """What a forger can do: recompute everything, with a key of their own."""
    body = {k: v for k, v in rec.items() if k != "mac"}
    rec["mac"] = hmac.new(b"x" * 64, json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), hashlib.sha256).hexdigest()
    return json.dumps(rec, sort_keys=True, separators=(",", ":"))


def _edit_last_move(lines):
    rec = json.loads(lines[-1])
    rec["who"] = "someone-else"
    return lines[:-1] + [json.dumps(rec, sort_keys=True, separators=(",", ":"))]


def _forge_a_move_with_the_right_prev(lines):
    last = json.loads(lines[-1])
    forged = {**last, "seq": last["seq"] + 1, "prev": last["mac"], "from": last["to"], "to": "1", "action": "promote"}
    return lines + [_resign_without_key(forged)]


def _swap(lines):
    return lines[:2] + [lines[3], lines[2]] + lines[4:]


EDITS = {
    "edit the last record": (_edit_last_move, "record #6 does not carry the platform's signature"),
    "a forged record, prev recomputed": (_forge_a_move_with_the_right_prev, "record #7 does not carry the platform's signature"),
    "delete the first record": (lambda lines: lines[1:], "record #1 does not follow record #0"),
    "delete a middle record": (lambda lines: lines[:2] + lines[3:], "record #3 does not follow record #2"),
    "reorder two records": (_swap, "record #3 does not follow record #2"),
    "delete the last record": (lambda lines: lines[:-1], "ends at record #5 but its head pointer says #6"),
    "not a record": (lambda lines: lines[:1] + ["{nope"] + lines[2:], "line 2 is not a record"),
    "nested deep": (lambda lines: lines + ["[" * 100_000], "line 7 is not a record"),
    "a MAC that is not hex": (lambda lines: lines[:-1] + [lines[-1].replace('"mac":"', '"mac":"\\u00e9')], "line 6 is not a signed record"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_ledger_is_named_by_verify_and_refused_by_serve_promote_and_rollback(trail, capsys, edit):
    path, _ = trail
    change, named = EDITS[edit]
    _write(path, change(_lines(path)))
    capsys.readouterr()
    assert main(["verify", "m"]) == 1
    out = capsys.readouterr().out.strip()
    assert named in out and "changed without the platform's key" in out and "\n" not in out, out
    assert main(["serve", "--name", "m"]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and "\n" not in err
    v3 = registry.register_version("m", "/c3")
    for argv in (["promote", "m", v3, "--reason", "x"], ["rollback", "m", "--reason", "x"], ["history", "m"]):
        assert main(argv) == 2, argv
        assert named in capsys.readouterr().err


def test_a_deleted_or_forged_head_pointer_is_named(trail):
    path, head = trail
    lines = _lines(path)
    _write(path, lines[:-1])
    record = json.loads(lines[-2])
    head.write_text(json.dumps({"seq": 5, "mac": record["mac"], "sig": "0" * 64}))  # moved back, signed without the key
    assert registry.verify("m") == [f"the ledger {path}: has a head pointer the platform did not sign: it was changed without the platform's key; restore it from a backup"]
    head.unlink()
    assert "has no head pointer (deleted)" in registry.verify("m")[0]
    _write(head, [])
    path.unlink()
    assert "is missing but its head pointer is there (deleted)" in registry.verify("m")[0]
    head.unlink()
    # with both gone the ledger is empty: MLflow's champion has nothing behind it
    problems = registry.verify("m")
    assert "ledger's champion is v-" in problems[0]


def test_the_key_file_is_private_and_a_mounted_key_must_exist(trail, monkeypatch, tmp_path):
    key = ledger.key_path()
    assert key == settings.home() / "secrets" / "ledger.key" and (key.stat().st_mode & 0o777) == 0o600
    key.chmod(0o644)
    with pytest.raises(ledger.LedgerError, match="can be read by others.*chmod 600"):
        ledger.read("m")
    key.chmod(0o600)
    monkeypatch.setenv(ledger.KEY_ENV, str(tmp_path / "mounted.key"))
    with pytest.raises(ledger.LedgerError, match="no such file; mount the ledger key there"):
        ledger.read("m")
    (tmp_path / "mounted.key").write_text("another key entirely, long enough to sign with\n")
    with pytest.raises(ledger.LedgerError, match="record #1 does not carry the platform's signature"):
        ledger.read("m")  # a ledger signed with one key is not trusted under another
    monkeypatch.setenv(ledger.KEY_VALUE_ENV, "short")
    with pytest.raises(ledger.LedgerError, match="MAVIN_LEDGER_KEY is shorter than 32 bytes"):
        ledger.read("m")
    monkeypatch.setenv(ledger.KEY_VALUE_ENV, key.read_text())  # the same key, from a cluster secret
    assert len(ledger.read("m")) == 6


def test_mlflow_edits_without_the_key_are_named_and_serving_never_falls_back(trail, capsys):
    """What someone with MLflow write access can do: move the alias, edit the champion's tags,
    tag a hand-registered version "pass", forge audit tags, delete the champion's version."""
    from mlflow.tracking import MlflowClient

    from mavin_ops.cli import _champion_triton_version

    c = MlflowClient(settings.tracking_uri())
    c.set_model_version_tag("m", "2", "mavin.triton_version", "99")
    assert registry.verify("m") == [
        "the champion v2's tag mavin.triton_version is '99' but the ledger says '11': edited outside mavin-ops; "
        "`mavin-ops verify m --repair` writes MLflow's copy again from the ledger"
    ]
    registry.repair("m")
    # an ungated version tagged "pass" by hand: never promoted, never rolled back to
    hand = registry.register_version("m", "/hand", tags={"mavin.gate": "pass", "mavin.triton_version": "12"})
    with pytest.raises(registry.PromotionError, match="never registered it after a passed gate"):
        registry.promote("m", hand, reason="forged")
    # an audit tag rewritten to say v2 displaced the hand version: rollback reads the ledger
    key = max(k for k in c.get_registered_model("m").tags if k.startswith(registry.AUDIT_PREFIX))
    body = json.loads(c.get_registered_model("m").tags[key])
    c.set_registered_model_tag("m", key, json.dumps({**body, "from": hand}))
    assert registry.verify("m") == [f"audit tag {key} differs from ledger record #{body['seq']}: edited outside mavin-ops; "
                                    "`mavin-ops verify m --repair` writes MLflow's copy again from the ledger"]
    c.delete_registered_model_tag("m", key)
    assert "was deleted outside mavin-ops" in registry.verify("m")[0]
    assert registry.rollback("m", reason="undo v2").to_version == "1"  # the ledger's previous, not the tag's
    assert registry.verify("m") == []
    # the champion's version deleted, an ungated version published: serve refuses, never "the newest"
    c.delete_model_version("m", "1")
    assert registry.verify("m") == ["the champion v1 was deleted from MLflow; roll back (`mavin-ops rollback m --reason ...`) or run a release"]
    capsys.readouterr()
    assert main(["serve", "--name", "m"]) == 2
    assert "the champion v1 was deleted from MLflow" in capsys.readouterr().err
    with pytest.raises(Exception, match="deleted from MLflow"):
        _champion_triton_version("m")


def test_the_gate_reads_the_champions_metrics_by_content_only_from_inside_the_home(tmp_path):
    from mavin_ops.evaluation import gate as G

    v1 = gated_version("m", metrics={"champion": 1})
    registry.promote("m", v1, reason="first")
    from mlflow.tracking import MlflowClient

    c = MlflowClient(settings.tracking_uri())
    c.set_model_version_tag("m", v1, G.METRICS_TAG, "/etc/passwd")  # a pointer in MLflow: never followed
    champ = G.load_champion("m")
    assert champ.version == v1 and champ.source.startswith("mavin-home:/") and champ.error is not None
    assert "schema is None" in champ.error  # our test file's own content was read, not /etc/passwd
    where = settings.local_path(champ.source)
    where.write_text(json.dumps({"champion": "forged"}))  # steered after its gate
    assert "is not the metrics its gate judged (sha256 differs from the ledger's)" in G.load_champion("m").error
    where.unlink()
    os.symlink("/etc/hostname", where)  # a link out of the home
    assert "leaves the state folder" in G.load_champion("m").error
    # metrics judged outside the home are kept inside it, by content
    outside = tmp_path / "metrics.json"
    outside.write_text('{"judged": "outside"}')
    (tmp_path / "gate.json").write_text("{}")
    registry.record_gate("m", release="r-out", verdict="pass", gate_json=tmp_path / "gate.json", metrics=outside, champion=v1)
    v2 = registry.register_version("m", "/c2", tags={"mavin.gate": "pass", "mavin.triton_version": "1"})
    registry.record_registration("m", v2, registry.passed_gate("m", "r-out", tmp_path / "gate.json"), triton_version=1)
    registry.promote("m", v2, reason="second")
    outside.write_text('{"judged": "changed since"}')
    version, where, data = registry.champion_metrics("m")
    assert version == v2 and where.startswith("mavin-home:/ledger/metrics/") and data == b'{"judged": "outside"}'


@pytest.mark.parametrize("head", [{"seq": 6, "mac": "\u00e9", "sig": ["\u00e9"]}, {"seq": 6, "mac": "\ud800", "sig": "0" * 64},
                                  {"seq": 2 ** 70, "mac": "0" * 64, "sig": "0" * 64}, [1]])
def test_a_crafted_head_pointer_is_one_line(trail, capsys, head):
    _, head_path = trail
    head_path.write_text(json.dumps(head))
    assert main(["serve", "--name", "m"]) == 2
    assert "head pointer" in capsys.readouterr().err


def test_a_deleted_ledger_is_named_and_repair_never_wipes_the_mirror(trail, capsys):
    path, head = trail
    path.unlink()
    assert "is missing but its head pointer is there (deleted)" in registry.verify("m")[0]
    head.unlink()  # (the head pointer lives beside the key: whoever can delete it holds the key)
    assert main(["verify", "m", "--repair"]) == 2
    assert "the ledger is empty but MLflow has a champion alias or audit tags" in capsys.readouterr().err
    assert registry.alias_version("m") == "2"


def test_symlinked_ledger_files_are_refused(tmp_path):
    folder = settings.home() / "ledger"
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path / "elsewhere.jsonl", folder / "n.jsonl")
    with pytest.raises(ledger.LedgerError, match="is a symbolic link"):
        ledger.read("n")
    with pytest.raises(ledger.LedgerError, match="is a symbolic link"):
        ledger.append("n", "gate", "x", verdict="pass")
    assert not (tmp_path / "elsewhere.jsonl").exists()


def test_a_missing_key_is_never_made_anew_while_ledgers_exist(trail):
    ledger.key_path().unlink()
    with pytest.raises(ledger.LedgerError, match="key .* is missing but ledgers exist; restore the key"):
        ledger.read("m")
    with pytest.raises(ledger.LedgerError, match="is missing but ledgers exist"):
        ledger.append("other", "gate", "x", verdict="pass")
    assert not ledger.key_path().exists()


def test_a_model_replaced_in_mlflow_is_named(trail):
    """Delete the registered model and build it again with the same tags, alias and audit
    tags, but another checkpoint behind the champion: its source gives it away."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(settings.tracking_uri())
    old = c.get_registered_model("m").tags
    versions = {v: c.get_model_version("m", v) for v in ("1", "2")}
    c.delete_registered_model("m")
    c.create_registered_model("m", tags=old)
    for v in ("1", "2"):
        c.create_model_version("m", "s3://attacker/evil" if v == "2" else versions[v].source, tags=versions[v].tags)
    c.set_registered_model_alias("m", "champion", "2")
    assert registry.verify("m") == ["the champion v2 in MLflow is not the version the ledger registered: its source is "
                                    "'s3://attacker/evil', the ledger says '/ckpt' (the model was replaced in MLflow)"]
    with pytest.raises(registry.PromotionError, match="not the version the ledger registered"):
        registry.repair("m")
    # the same source, another run behind it
    run = c.create_run(c.create_experiment("forger"))
    c.delete_registered_model("m")
    c.create_registered_model("m", tags=old)
    for v in ("1", "2"):
        c.create_model_version("m", versions[v].source, run_id=run.info.run_id if v == "2" else None, tags=versions[v].tags)
    c.set_registered_model_alias("m", "champion", "2")
    assert any("its run is '" in p and "the ledger says '' (the model was replaced in MLflow)" in p for p in registry.verify("m"))


def test_odd_version_numbers_and_tags_are_one_line(trail, capsys):
    from mlflow.tracking import MlflowClient

    assert main(["promote", "m", "9223372036854775808", "--reason", "x"]) == 2
    assert "has no version" in capsys.readouterr().err
    MlflowClient(settings.tracking_uri()).set_model_version_tag("m", "2", "mavin.triton_version", "\u00b2")
    assert main(["serve", "--name", "m", "--trust-alias"]) == 2
    assert "is not a version number" in capsys.readouterr().err


def test_free_text_is_bounded_before_it_is_signed_and_mlflow_text_is_never_copied(trail, capsys):
    """A 100,000-character reason broke the mirror for good (MLflow refuses such a tag, after
    the ledger had the move); an MLflow writer's 100,000-emoji gate_report tag made a 1.2 MB
    ledger line that no read accepted again."""
    from mlflow.tracking import MlflowClient

    path, _ = trail
    before = path.read_bytes()
    v3 = gated_version("m", triton=12)
    MlflowClient(settings.tracking_uri()).set_model_version_tag("m", v3, "mavin.gate_report", "\U0001F600" * 100_000)
    assert main(["promote", "m", v3, "--reason", "x" * 100_000]) == 2
    assert "--reason must be one line of at most 2000 characters" in capsys.readouterr().err
    assert main(["promote", "m", v3, "--reason", "fine", "--who", "w" * 300]) == 2
    assert main(["promote", "m", v3, "--reason", "fine"]) == 0
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["kind"] == "move" and last["gate_report"].startswith("mavin-home:/") and len(path.read_bytes()) - len(before) < 5000
    assert registry.verify("m") == []


def test_deleted_champion_metrics_are_named_by_verify(trail):
    from mavin_ops.evaluation import gate as G

    settings.local_path(G.load_champion("m").source).unlink()
    (problem,) = registry.verify("m")
    assert "champion m v2: cannot read its metrics" in problem and "the next gate cannot compare against the champion" in problem


def test_a_write_cut_short_is_left_out_and_removed_by_the_next_record(trail, capsys):
    """A full disk mid-append leaves part of a line and no head update: the ledger reads as
    it was, verify is clean, and the next record replaces the torn bytes. Cutting into a record
    the head pointer names is still deletion."""
    path, _ = trail
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"seq":7,"kind":"move","half a rec')
    assert len(ledger.read("m")) == 6 and registry.verify("m") == []
    v3 = gated_version("m", triton=12)
    registry.promote("m", v3, reason="after the torn write")
    assert [r["seq"] for r in ledger.read("m")] == list(range(1, 10)) and registry.verify("m") == []
    assert b"half a rec" not in path.read_bytes()
    path.write_bytes(path.read_bytes()[:-40])  # into the last record, which the head names
    assert "ends at record #8 (the last one cut short) but its head pointer says #9" in registry.verify("m")[0]
