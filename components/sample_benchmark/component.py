"""Generate the benchmark clips from a trained checkpoint (evaluation/samples.py)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def sample_benchmark(
    checkpoint: Input[Model],
    dataset: Input[Dataset],
    release_id: str,
    kfp_run_id: str,
    generated: Output[Dataset],
    steps: int = 0,
    seed: int = 0,
    limit: int = 0,
) -> int:
    """One generated clip per benchmark (eval) script, in the dataset layout; returns the
    number of clips. ``steps`` 0 = the model's default sampler steps; ``limit`` 0 = all.
    ``dataset`` is the validated dataset: a quarantined clip is never generated (its count and
    ids are tagged on this step's run, ``mavin.quarantined_count``/``mavin.quarantined_ids``)."""
    from pathlib import Path

    import mlflow

    from mavin_ops import tracking
    from mavin_ops.data import manifest, validate
    from mavin_ops.evaluation.samples import generate_benchmark
    from mavin_ops.training import checkpoint as ckpt
    from mavin_ops.training.trainer import load_trained_model

    params = {"steps": steps or None, "seed": seed, "limit": limit or None}
    with tracking.step_run(release_id, kfp_run_id, "sample_benchmark", params):
        model, meta = load_trained_model(checkpoint.path)
        generate_benchmark(
            model, dataset.path, generated.path, steps=steps or None, seed=seed, limit=limit or None
        )
        n = sum(1 for line in manifest.read_manifest(generated.path) if line.row)
        mlflow.log_metric("generated_clips", n)
        marker = Path(checkpoint.path) / ckpt.MANIFEST
        if marker.is_file():
            mlflow.set_tag("mavin.checkpoint_sha256", manifest.sha256_file(marker))
        mlflow.set_tag("mavin.checkpoint_stage", str(meta.get("stage", "")))
        record = validate.quarantine_record(dataset.path)
        if record is not None:
            mlflow.set_tags({"mavin.quarantined_count": str(record.count), "mavin.quarantined_ids": record.ids_text()})
    generated.metadata.update({"clips": n})
    return n
