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
    ("pass" / "fail"). Writes gate.json and the HTML page, logs them in a nested MLflow run
    ``gate``, and appends the verdict to the platform's signed ledger with the sha256 of
    gate.json and of the metrics compared (mavin_ops/registry.py: record_gate)."""
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from mavin_ops import registry, tracking
    from mavin_ops.evaluation.gate import GATE_HTML, GATE_JSON, run_gate

    params = {"policy_path": policy_path or "default", "model_name": model_name}
    with tracking.step_run(release_id, kfp_run_id, "gate", params):
        with tempfile.TemporaryDirectory() as tmp:
            decision = run_gate(metrics_json.path, policy_path or None, tmp, model_name=model_name)
            for src, dst in ((GATE_HTML, report.path), (GATE_JSON, gate_json.path)):
                Path(dst).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tmp) / src, dst)
        # The verdict's record of truth: the signed ledger (register_model and promote read it there).
        champion = decision.champion or {}
        registry.record_gate(model_name, release=tracking.release_key(release_id, kfp_run_id), verdict=decision.verdict,
                             gate_json=gate_json.path, metrics=metrics_json.path, champion=champion.get("version"),
                             champion_metrics_sha256=champion.get("metrics_sha256") or "")
    gate_json.metadata.update({"decision": decision.verdict, "champion": (decision.champion or {}).get("version") or ""})
    print(decision.summary())
    out = namedtuple("GateOutputs", ["passed", "decision", "summary"])
    return out(bool(decision.passed), decision.verdict, decision.summary())
