"""Serve a published version with the real tritonserver and generate from a script
(serving/smoke.py)."""

from typing import NamedTuple

from kfp import dsl

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def serving_smoke_test(
    version: int,
    release_id: str,
    kfp_run_id: str,
    store: str = "",
    name: str = "mavin",
    endpoint_url: str = "",
    variant: str = "",
    protocol: str = "http",
    steps: int = 2,
) -> NamedTuple("SmokeTest", passed=bool, frames=int, audio_samples=int, refused_status=str):
    """Fetch ``version`` from ``store`` (verified), start tritonserver, generate an example
    scene through ``protocol`` and check frames, audio and the mp4; check that a bad script is
    refused with a 4xx-class error and the server answers afterwards. Fails the step on any
    failed check. ``variant`` empty: what the server supports (onnxruntime, else python)."""
    from collections import namedtuple

    import mlflow

    from mavin_ops import settings, tracking
    from mavin_ops.serving.smoke import smoke_test

    store = store or str(settings.home() / "model-store")
    with tracking.step_run(release_id, kfp_run_id, "serving_smoke_test", {"version": version, "protocol": protocol}):
        result = smoke_test(store, name=name, version=version, endpoint_url=endpoint_url or None, variant=variant or None, protocol=protocol, steps=steps, log=print)
        mlflow.log_dict(result.to_dict(), "smoke_test.json")
        mlflow.log_metrics({"smoke.frames": result.frames, "smoke.audio_samples": result.audio_samples, "smoke.seconds": result.seconds})
    out = namedtuple("SmokeTest", ["passed", "frames", "audio_samples", "refused_status"])
    return out(result.passed, result.frames, result.audio_samples, result.refused_status)
