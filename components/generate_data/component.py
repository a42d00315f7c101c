"""Generate the synthetic MAVINSet-mini dataset (data/synth.py) as a KFP Dataset artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def generate_data(preset: str, seed: int, release_id: str, kfp_run_id: str, dataset: Output[Dataset]) -> str:
    """Write a dataset version directory (manifest.jsonl + media) to ``dataset.path``.
    Returns the generator's summary as JSON."""
    import json

    import mlflow

    from mavin_ops import tracking
    from mavin_ops.data import synth

    with tracking.step_run(release_id, kfp_run_id, "generate_data", {"preset": preset, "seed": seed}):
        summary = synth.generate(dataset.path, preset=preset, seed=seed, progress=False)
        mlflow.log_dict(summary, "generate_summary.json")
    dataset.metadata.update({"preset": preset, "seed": seed})
    return json.dumps(summary)
