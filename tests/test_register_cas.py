"""The release's promotion is a compare-and-set on the champion the gate compared against:
two releases gated against v1 cannot both be promoted, and the second never lands over a
champion it was not compared to (release-integrity item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp import dsl
from ledger_support import gated_version

from mavin_ops import registry, tracking
from mavin_ops.components.register_model.component import register_model


def _artifact(cls, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return cls(name=path.name, uri=str(path), metadata={})


def _register_after_gate(tmp_path: Path, release: str, gated_against: str | None):
    ckpt = tmp_path / release / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "MANIFEST.json").write_text("{}")
    gate = _artifact(dsl.Artifact, tmp_path / release / "gate.json")
    champion = None if gated_against is None else {"model_name": "m", "version": gated_against}
    Path(gate.path).write_text(json.dumps({"verdict": "pass", "passed": True, "champion": champion}))
    metrics = tmp_path / release / "metrics.json"
    metrics.write_text("{}")
    registry.record_gate("m", release=release, verdict="pass", gate_json=gate.path, metrics=metrics, champion=gated_against)
    tracking.parent_run(release, "k")
    return register_model.python_func(
        checkpoint=_artifact(dsl.Model, ckpt), gate_json=gate, metrics_uri="m.json", triton_version=1,
        triton_uri="file:///x", smoke_passed=True, release_id=release, kfp_run_id="k", model_name="m",
    )


def _parent_tags(release: str) -> dict:
    return tracking.client().get_run(tracking.parent_run(release, "k")).data.tags


def test_a_release_gated_against_an_old_champion_is_not_promoted(tmp_path):
    first = _register_after_gate(tmp_path, "r1", None)
    assert first.champion == first.version == "1"
    # r2 and r3 were both gated against v1; r2 promotes first
    second = _register_after_gate(tmp_path, "r2", "1")
    assert registry.champion_version("m") == second.version == "2"
    third = _register_after_gate(tmp_path, "r3", "1")
    assert registry.champion_version("m") == "2" and third.champion == "2" and third.version == ""
    tags = _parent_tags("r3")
    assert tags["mavin.verdict"] == "not promoted"
    assert tags["mavin.verdict_reason"].startswith("champion changed from v1 to v2 since the gate ran")
    assert [r.to_version for r in registry.history("m")] == ["1", "2"]


def test_a_champion_moved_between_register_and_promote_leaves_a_stale_version(tmp_path, monkeypatch):
    _register_after_gate(tmp_path, "r1", None)
    real_register = registry.register_version

    def register_while_another_release_promotes(*a, **k):
        version = real_register(*a, **k)
        monkeypatch.setattr(registry, "register_version", real_register)
        registry.record_registration("m", version, registry.passed_gate("m", "r2", tmp_path / "r2" / "gate.json"), triton_version=1)
        other = gated_version("m", triton=2)
        registry.promote("m", other, reason="another release won the race")
        return version

    monkeypatch.setattr(registry, "register_version", register_while_another_release_promotes)
    out = _register_after_gate(tmp_path, "r2", "1")
    assert registry.champion_version("m") == "3" and out.version == "2"
    assert _parent_tags("r2")["mavin.verdict_reason"].startswith("champion changed from v1 to v3 since the gate ran")
    # its gate ran against v1: a manual promotion cannot land it over v3 either
    with pytest.raises(registry.PromotionError, match="not newer than the champion v3"):
        registry.promote("m", "2", reason="by hand")
    assert registry.rollback("m", reason="undo v3").to_version == "1"  # v1 again: v2's gate ran against it
    assert registry.promote("m", "2", reason="by hand").to_version == "2"
