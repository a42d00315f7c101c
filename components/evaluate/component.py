"""Evaluate generated clips against the benchmark (evaluation/runner.py): every metric per
clip and aggregated, written as metrics.json and logged to MLflow."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def evaluate(
    generated: Input[Dataset],
    benchmark: Input[Dataset],
    release_id: str,
    kfp_run_id: str,
    metrics: Output[Metrics],
    metrics_json: Output[Artifact],
    config_path: str = "",
    val_metrics: str = "",
    limit: int = 0,
) -> NamedTuple("EvaluateOutputs", benchmark_digest=str, n_clips=int, summary=str, metrics_uri=str):
    """Score the clips in ``generated`` (dataset layout, same ids as the benchmark's ``eval``
    split) against ``benchmark``. ``config_path``: an evaluation config YAML ("" = the
    defaults). ``val_metrics``: the training run's validation losses, ``runs:/<run_id>`` or
    a metrics.json path ("" = none). Writes metrics.json to ``metrics_json``, the aggregate
    means to the KFP ``metrics`` artifact, and logs a nested MLflow run ``evaluate``. The
    contact sheets (evaluation/sheets.py) go next to ``metrics_json`` and into that run.
    ``metrics_uri`` (``runs:/<evaluate run>/evaluation/metrics.json``) is what to record as
    the ``mavin.metrics_json`` tag of a model version registered from this evaluation, so a
    later gate can compare against it when it becomes the champion."""
    import json
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from mavin_ops import tracking
    from mavin_ops.evaluation.gate import METRICS_ARTIFACT
    from mavin_ops.evaluation.runner import evaluate_dir

    params = {"config_path": config_path or "default", "val_metrics": val_metrics or "none"}
    with tracking.step_run(release_id, kfp_run_id, "evaluate", params) as run:
        with tempfile.TemporaryDirectory() as tmp:
            result = evaluate_dir(
                generated.path,
                benchmark.path,
                tmp,
                config=config_path or None,
                val_metrics=val_metrics or None,
                limit=limit or None,
                sheets=True,
            )
            Path(metrics_json.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / "metrics.json", metrics_json.path)
            if result.get("sheets"):
                # next to metrics.json, where the gate page finds them (they are in MLflow too)
                sheets = Path(metrics_json.path).parent / result["sheets"]["dir"]
                shutil.rmtree(sheets, ignore_errors=True)
                shutil.copytree(Path(tmp) / result["sheets"]["dir"], sheets)
    means = {k: v["mean"] for k, v in result["metrics"].items() if v.get("mean") is not None}
    for name, value in means.items():
        metrics.log_metric(name, float(value))
    bench = result["benchmark"]
    metrics_json.metadata.update({"benchmark_id": bench["id"], "benchmark_digest": bench["digest"], "n_clips": bench["n_clips"]})
    summary = json.dumps({"benchmark": bench["id"], "n_clips": bench["n_clips"], "metrics": means}, sort_keys=True)
    print(summary)
    metrics_uri = f"runs:/{run.info.run_id}/{METRICS_ARTIFACT}"
    metrics_json.metadata["mlflow_uri"] = metrics_uri
    out = namedtuple("EvaluateOutputs", ["benchmark_digest", "n_clips", "summary", "metrics_uri"])
    return out(bench["digest"], int(bench["n_clips"]), summary, metrics_uri)
