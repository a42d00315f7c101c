"""The release pipeline, run for real with the KFP local runner on the debug preset: every
step logs a nested MLflow run, the dataset is logged with its DVC digest, and the exit
handler closes the parent run with the pipeline's true final status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mavin_ops import settings
from mavin_ops.release import run_release


def runs_of(result):
    c = MlflowClient(settings.tracking_uri())
    parent = c.get_run(result.parent_run_id)
    children = {s["name"]: c.get_run(s["run_id"]) for s in result.steps}
    return c, parent, children


def test_release_runs_generate_version_validate_with_lineage(isolated_home):
    lines: list[str] = []
    result = run_release(preset="debug", seed=3, echo=lines.append)
    assert result.succeeded, result.error
    c, parent, children = runs_of(result)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mavin.release_id"] == result.release_id
    assert list(children) == ["generate_data", "version_data", "validate_data"]
    assert all(r.info.status == "FINISHED" for r in children.values())
    # Dataset lineage: the DVC digest on the parent run and as the logged input's digest.
    digest = parent.data.tags["mavin.dataset_digest"]
    assert digest.endswith(".dir") and parent.data.tags["mavin.dataset_tag"] == "mavinset-mini-v1"
    inputs = children["version_data"].inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == digest[:36] and inputs[0].dataset.name == "mavinset-mini"
    # The validation report is an artifact of the validate step.
    local = Path(c.download_artifacts(children["validate_data"].info.run_id, "validation", str(isolated_home / "dl")))
    summary = json.loads((local / "validation.json").read_text())
    assert summary["rows"] == 6 and summary["quarantined"] == 0 and summary["passed"] is True
    assert (local / "quarantine.jsonl").exists()
    # The printed summary says where things landed.
    text = "\n".join(lines)
    assert result.release_id in text and digest in text and "mlflow ui --backend-store-uri" in text
    assert Path(result.pipeline_dir).is_dir()


def test_failed_step_marks_parent_failed_via_exit_handler(isolated_home):
    result = run_release(preset="no-such-preset", echo=None)
    assert not result.succeeded and "generate" in result.error
    _, parent, children = runs_of(result)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["mavin.final_state"] == "FAILED"
    assert children["generate_data"].info.status == "FAILED"
    assert "version_data" not in children
