"""Register a trained foundation model as a version of ``mavin-base`` (mavin_ops/foundation.py)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def register_base(
    checkpoint: Input[Model],
    metrics_json: Input[Artifact],
    dataset_digest: str,
    dataset_tag: str,
    world_preset: str,
    seed: int,
    release_id: str,
    kfp_run_id: str,
    metrics_uri: str = "",
) -> str:
    """Register the ``base`` stage's checkpoint as ``mavin-base`` (once per weights sha256) and
    make it ``champion``, with its lineage: this pretrain run's id (``mavin-ops lineage``
    walks it to the base's data, runs and commit), the data version, the evaluation's metrics
    (``mavin.metrics_json``) and headline numbers. Returns the version number."""
    import json
    from pathlib import Path

    import mlflow

    from mavin_ops import foundation, tracking
    from mavin_ops.foundation import pretrain_command
    from mavin_ops.training import checkpoint as ckpt
    from mavin_ops.training.trainer import check_base

    with tracking.step_run(release_id, kfp_run_id, "register_base", {"world_preset": world_preset, "seed": seed}) as run:
        info = check_base(Path(checkpoint.path))
        meta = ckpt.load_json(info, "meta.json")
        result = json.loads(open(metrics_json.path).read())
        headline = {k: v.get("mean") for k, v in result.get("metrics", {}).items() if isinstance(v, dict)}
        data = {"name": foundation.BASE_WORLD, "preset": world_preset, "seed": seed, "digest": dataset_digest, "tag": dataset_tag}
        card = foundation.card_from_meta(meta, info.manifest["files"]["model.safetensors"]["sha256"],
                                          command=pretrain_command(meta["preset"], seed, meta["step"]), data=data,
                                          metrics={k: v for k, v in headline.items() if isinstance(v, (int, float))})
        key = tracking.release_key(release_id, kfp_run_id)
        # What pretrain made becomes mavin-base@champion: a base passes no gate (its evaluation is here).
        version, _ = foundation.register(info.file("model.safetensors"), card, run_id=run.info.run_id,
                                      tags={"mavin.release_id": key, "mavin.metrics_json": metrics_uri}, champion=True)
        mlflow.log_dict(card, "base_card.json")
        mlflow.set_tag("mavin.base_version", version)
    print(f"registered {foundation.BASE_MODEL} version {version} (step {meta['step']})")
    return version
