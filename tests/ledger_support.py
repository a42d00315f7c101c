"""A model version registered the way a release registers one, without running a release:
the gate's verdict into the signed ledger (gate.json and metrics.json under the home), the
MLflow version with its mirror tags, and the ledger's registration. Import by name."""

from __future__ import annotations

import json
import uuid
from typing import Any

from mavin_ops import registry, settings

__all__ = ["CURRENT", "gated_version"]

#: ``against`` default: the champion of the moment, as a release's gate would see it.
CURRENT = object()


def gated_version(model: str, *, against: Any = CURRENT, verdict: str = "pass", triton: int = 1,
                  metrics: dict | None = None, tags: dict | None = None, source: str = "/ckpt",
                  release: str = "") -> str:
    """A new version of ``model`` whose gate ran against ``against`` with ``verdict``. A failed
    gate registers the version in MLflow only (as a hand registration would): the ledger
    never registers it. ``metrics``: the metrics.json its gate judged (its champion's metrics
    when it becomes champion)."""
    release = release or f"r-{uuid.uuid4().hex[:8]}"
    folder = settings.home() / "pipelines" / "test-gates" / uuid.uuid4().hex[:8]
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics if metrics is not None else {"release": release}))
    (folder / "gate.json").write_text(json.dumps({"verdict": verdict, "release": release}))
    champion = registry.champion_version(model) if against is CURRENT else against
    registry.record_gate(model, release=release, verdict=verdict, gate_json=folder / "gate.json", metrics=folder / "metrics.json",
                         champion=champion)
    mirror = {"mavin.gate": verdict, "mavin.gate_report": str(folder / "gate.json"), "mavin.release_id": release,
              "mavin.triton_version": str(triton)}
    version = registry.register_version(model, source, tags={**mirror, **(tags or {})})
    if verdict == "pass":
        gate = registry.passed_gate(model, release, folder / "gate.json")
        registry.record_registration(model, version, gate, triton_version=triton)
    return version
