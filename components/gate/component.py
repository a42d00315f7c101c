"""The release gate (evaluation/gate.py): floors and paired-bootstrap non-regression
against the champion; outputs the decision for ``dsl.If`` and the report page."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Output

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def gate(
    metrics_json: Input[Artifact],
    release_id: str,
    kfp_run_id: str,
    report: Output[HTML],
    gate_json: Output[Artifact],
    policy_path: str = "",
    model_name: str = "mavin",
) -> NamedTuple("GateOutputs", passed=bool, decision=str, summary=str):
    """Decide the gate for the challenger's metrics.json against the registry's
    ``champion`` of ``model_name`` (floors only when there is none) under ``policy_path``
    ("" = evaluation/gate_policy.yaml). Never fails the step for a "fail" verdict: branch on
    ``passed`` (``dsl.If(gate_task.outputs["passed"] == True)``) or ``decision``
    ("pass" / "fail"). Writes gate.json and the HTML page, and logs them in a nested MLflow
    run ``gate``."""
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from mavin_ops import tracking
    from mavin_ops.evaluation.gate import GATE_HTML, GATE_JSON, run_gate

    params = {"policy_path": policy_path or "default", "model_name": model_name}
    with tracking.step_run(release_id, kfp_run_id, "gate", params):
        with tempfile.TemporaryDirectory() as tmp:
            decision = run_gate(metrics_json.path, policy_path or None, tmp, model_name=model_name)
            for src, dst in ((GATE_HTML, report.path), (GATE_JSON, gate_json.path)):
                Path(dst).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tmp) / src, dst)
    gate_json.metadata.update({"decision": decision.verdict, "champion": (decision.champion or {}).get("version") or ""})
    print(decision.summary())
    out = namedtuple("GateOutputs", ["passed", "decision", "summary"])
    return out(bool(decision.passed), decision.verdict, decision.summary())
