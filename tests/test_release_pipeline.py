"""The release pipeline's exit handler, run for real with the KFP local runner: a failing
step leaves the MLflow parent run FAILED. (The successful path and its lineage are checked
in test_release.py.)"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from mavin_ops import settings
from mavin_ops.release import run_release


def runs_of(result):
    c = MlflowClient(settings.tracking_uri())
    parent = c.get_run(result.parent_run_id)
    children = {s["name"]: c.get_run(s["run_id"]) for s in result.steps}
    return c, parent, children


def test_failed_step_marks_parent_failed_via_exit_handler(isolated_home):
    result = run_release(preset="no-such-preset", echo=None, check=False)  # past the pre-flight checks
    assert not result.succeeded and "generate" in result.error
    _, parent, children = runs_of(result)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["mavin.final_state"] == "FAILED"
    assert children["generate_data"].info.status == "FAILED"
    assert "version_data" not in children
