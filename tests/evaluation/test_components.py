"""The evaluate and gate KFP components: their Python functions on a real debug dataset
and a real MLflow store, their compiled specs, and the gate decision driving dsl.If.
(No ``from __future__ import annotations`` here: KFP reads the inline component's types.)"""

import json

import pytest
from pathlib import Path

from kfp import dsl

from mavin_ops.components.evaluate.component import evaluate
from mavin_ops.components.gate.component import gate


def _artifact(cls, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return cls(name=path.name, uri=str(path), metadata={})


def test_evaluate_then_gate_python_funcs(debug_dataset, tmp_path, mlflow_uri):
    import mlflow
    from mlflow.tracking import MlflowClient

    from mavin_ops import settings, tracking
    from mavin_ops.evaluation.gate import METRICS_ARTIFACT
    from mavin_ops.evaluation.results import read_metrics

    bench = _artifact(dsl.Dataset, debug_dataset)
    metrics = _artifact(dsl.Metrics, tmp_path / "eval" / "metrics")
    metrics_json = _artifact(dsl.Artifact, tmp_path / "eval" / "metrics_json")
    out = evaluate.python_func(
        generated=bench, benchmark=bench, release_id="r-test", kfp_run_id="k-test", metrics=metrics, metrics_json=metrics_json
    )
    doc = json.loads(Path(metrics_json.path).read_text())
    assert out.n_clips == 2 and out.benchmark_digest == doc["benchmark"]["digest"]
    assert metrics.metadata["sta"] == pytest.approx(1.0) and metrics.metadata["tams"] == pytest.approx(1.0)
    # the benchmark scored as its own generation: every metric is the ground-truth reference
    summary = json.loads(out.summary)["metrics"]
    assert summary["bisc"] == pytest.approx(doc["references"]["ground_truth"]["bisc"]) and summary["bisc"] > 0.5
    assert doc["metrics"]["fidelity_fd"]["mean"] < 1e-6 < doc["references"]["shuffled"]["fidelity_fd"]
    # the evaluate run's metrics.json, as a champion's version tag would point at it
    assert out.metrics_uri.startswith("runs:/") and out.metrics_uri.endswith(METRICS_ARTIFACT)
    fetched = mlflow.artifacts.download_artifacts(artifact_uri=out.metrics_uri, dst_path=str(tmp_path / "dl"))
    assert read_metrics(fetched)["benchmark"]["digest"] == out.benchmark_digest

    report = _artifact(dsl.HTML, tmp_path / "gate" / "report")
    gate_json = _artifact(dsl.Artifact, tmp_path / "gate" / "gate_json")
    res = gate.python_func(metrics_json=metrics_json, release_id="r-test", kfp_run_id="k-test", report=report, gate_json=gate_json)
    assert res.passed is True and res.decision == "pass"
    assert json.loads(Path(gate_json.path).read_text())["verdict"] == "pass"
    assert "Release gate" in Path(report.path).read_text()

    client = MlflowClient(settings.tracking_uri())
    parent = tracking.parent_run("r-test", "k-test")
    steps = client.search_runs([tracking.experiment_id()], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    by_step = {r.data.tags["mavin.step"]: r for r in steps}
    assert by_step["evaluate"].data.metrics["eval/sta"] == pytest.approx(1.0)
    # the ceilings the principle-based floors are fractions of, and the encoder that saw the frames
    assert by_step["evaluate"].data.metrics["eval/ground_truth/vc"] == pytest.approx(doc["references"]["ground_truth"]["vc"])
    assert by_step["evaluate"].data.tags["mavin.world_encoder_sha256"] == doc["encoder"]["sha256"]
    assert by_step["gate"].data.metrics["gate/passed"] == 1.0
    # the contact sheets: logged with the evaluate run, next to metrics.json, on the gate page
    logged = [a.path for a in client.list_artifacts(by_step["evaluate"].info.run_id, "evaluation/sheets")]
    assert "evaluation/sheets/summary.png" in logged and len(logged) == 3  # 2 clips + the summary
    assert (Path(metrics_json.path).parent / "sheets" / "summary.png").is_file()
    assert "What the model drew" in Path(report.path).read_text()


def test_gate_component_reports_a_fail_without_raising(kit, tmp_path, mlflow_uri):
    doc = kit.metrics_doc({"sta": [0.1] * 5, "tams": [0.1] * 5, "cisc": [0.1] * 5, "bisc": [0.1] * 5,
                           "shot_boundary_deviation": [0.0] * 5})
    metrics_json = _artifact(dsl.Artifact, tmp_path / "metrics_json")
    kit.write_doc(Path(metrics_json.path), doc)
    report = _artifact(dsl.HTML, tmp_path / "report")
    gate_json = _artifact(dsl.Artifact, tmp_path / "gate_json")
    res = gate.python_func(metrics_json=metrics_json, release_id="r2", kfp_run_id="k2", report=report, gate_json=gate_json)
    assert res.passed is False and res.decision == "fail" and "below the floor" in res.summary


def test_components_compile_and_gate_drives_dsl_if(tmp_path):
    import yaml
    from kfp import compiler

    for comp in (evaluate, gate):
        path = tmp_path / f"{comp.name}.yaml"
        compiler.Compiler().compile(comp, str(path))
        spec = yaml.safe_load(path.read_text())
        assert spec["root"]["dag"]["tasks"]

    from mavin_ops.components._image import IMAGE

    @dsl.component(base_image=IMAGE)
    def publish(msg: str) -> str:
        return msg

    @dsl.pipeline(name="gate-branch")
    def branch(metrics_json_uri: str = "x"):
        metrics_json = dsl.importer(artifact_uri=metrics_json_uri, artifact_class=dsl.Artifact)
        g = gate(metrics_json=metrics_json.output, release_id="r", kfp_run_id="k")
        with dsl.If(g.outputs["passed"] == True):  # noqa: E712  (KFP condition syntax)
            publish(msg=g.outputs["decision"])

    path = tmp_path / "branch.yaml"
    compiler.Compiler().compile(branch, str(path))
    text = path.read_text()
    assert "condition-1" in text and "passed" in text
    outputs = yaml.safe_load(text)["components"]["comp-gate"]["outputDefinitions"]
    assert outputs["parameters"]["passed"]["parameterType"] == "BOOLEAN"
    assert set(outputs["artifacts"]) == {"report", "gate_json"}


def test_evaluate_and_gate_run_with_the_kfp_local_runner(debug_dataset, tmp_path):
    """The wiring end to end: importer -> evaluate -> gate as subprocesses (about 15 s)."""
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline(name="eval-gate")
    def eval_gate(bench_uri: str) -> str:
        bench = dsl.importer(artifact_uri=bench_uri, artifact_class=dsl.Dataset)
        e = evaluate(generated=bench.output, benchmark=bench.output, release_id="r-local", kfp_run_id="k-local")
        g = gate(metrics_json=e.outputs["metrics_json"], release_id="r-local", kfp_run_id="k-local")
        return g.outputs["decision"]

    task = eval_gate(bench_uri=str(debug_dataset))
    assert task.output == "pass"
    pages = list((tmp_path / "root").glob("eval-gate-*/gate/report"))
    assert len(pages) == 1 and "PASS" in pages[0].read_text()
