"""The whole release pipeline through the KFP local runner on the debug preset (a few
training steps): pass branch (export, publish, real tritonserver smoke test, register,
promote) and then a failing gate that leaves the champion and the served version untouched."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mavin_ops import lineage, registry, settings
from mavin_ops.release import run_release

sys.path.insert(0, str(Path(__file__).resolve().parent))  # release_support

from release_support import DEBUG_RELEASE, lenient_policy  # noqa: E402


@pytest.mark.server
def test_release_promotes_then_failed_gate_changes_nothing(tmp_path, isolated_home, monkeypatch, capfd):
    secret = "sk-test-secret-0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    common = dict(**DEBUG_RELEASE, model_name="mavin-debug")
    first = run_release(gate_policy=lenient_policy(tmp_path), **common)
    assert first.succeeded, first.error
    steps = [s["name"] for s in first.steps]
    assert steps[-4:] == ["export_model", "publish_model", "serving_smoke_test", "register_model"], steps
    assert first.tags["mavin.verdict"] == "promoted"
    assert steps[:3] == ["generate_data", "version_data", "validate_data"]
    c = MlflowClient(settings.tracking_uri())
    runs = {s["name"]: c.get_run(s["run_id"]) for s in first.steps}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert c.get_run(first.parent_run_id).info.status == "FINISHED"
    digest = first.tags["mavin.dataset_digest"]
    assert digest.endswith(".dir") and first.tags["mavin.dataset_tag"] == "mavinset-mini-v1"
    inputs = runs["version_data"].inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == digest[:36] and inputs[0].dataset.name == "mavinset-mini"
    local = Path(c.download_artifacts(runs["validate_data"].info.run_id, "validation", str(tmp_path / "dl")))
    summary = json.loads((local / "validation.json").read_text())
    assert summary["rows"] == 6 and summary["quarantined"] == 0 and summary["passed"] is True
    assert "mlflow ui --backend-store-uri" in "\n".join(first.lines())
    # Credentials from the environment never reach params, tags or the pipeline's outputs.
    for run in [c.get_run(first.parent_run_id), *runs.values()]:
        assert secret not in repr(run.data.params) and secret not in repr(run.data.tags)
    for path in Path(first.pipeline_dir).rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert secret.encode() not in path.read_bytes(), path
    # ... nor the step logs the local runner prints (every step's stdout and stderr).
    logs = capfd.readouterr()
    assert "executor_main" in logs.out + logs.err or "generate" in logs.out + logs.err  # the logs were captured
    assert secret not in logs.out and secret not in logs.err
    champion = registry.champion_version("mavin-debug")
    assert champion == "1"
    chain = lineage.lineage("mavin-debug@champion")
    assert [link.kind for link in chain][:3] == ["served", "model", "release"]
    assert chain[0].title.endswith("version 1") and not chain[0].missing
    assert sum(link.kind == "train" for link in chain) == 4
    assert chain[-2].facts["DVC digest"] == first.tags["mavin.dataset_digest"]
    # What `make release` ends with: the served champion answers the generate client.
    from mavin_ops.cli import main

    assert main(["smoke", "--name", "mavin-debug", "--steps", "2", "--out", str(tmp_path / "served")]) == 0
    assert (tmp_path / "served" / "smoke.mp4").stat().st_size > 0

    strict = tmp_path / "strict.yaml"
    strict.write_text("version: 1\nmetrics:\n  sta: {min: 1.5}\n")  # unreachable: STA <= 1
    second = run_release(gate_policy=str(strict), **common)
    assert second.succeeded, second.error  # a failed gate is a successful run ...
    assert second.tags["mavin.verdict"] == "not promoted"  # ... that promotes nothing
    assert "sta" in second.tags["mavin.verdict_reason"]
    assert "export_model" not in [s["name"] for s in second.steps]
    assert registry.champion_version("mavin-debug") == champion
    assert [r.to_version for r in registry.history("mavin-debug")] == ["1"]
    store = isolated_home / "model-store" / "mavin-debug"
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == ["1"]
