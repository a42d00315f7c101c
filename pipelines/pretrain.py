"""The foundation pipeline (Kubeflow Pipelines v2): the model every release fine-tunes.

    generate its own world (seeds disjoint from the benchmark's) -> version data (DVC, as
    ``mavinset-base``) -> validate data -> train base -> sample the world's held-out clips ->
    evaluate (the release's evaluator) -> register ``mavin-base`` (lineage: data version,
    commit, recipe, steps, metrics, contact sheets)

The same components as the release (components/), a different order and a different world.
``steps`` > 0 sets the base stage's total step count: run it again with the same ``run_id``
and a larger ``steps`` and the data steps come from the cache while training resumes from its
newest checkpoint (the base recipe's learning rate is constant after its warm-up, so chunks
add up to one run). On a GPU (``mavin-ops pretrain`` on a machine with CUDA, or this
pipeline compiled for a cluster) the same train step runs there.
"""

from kfp import dsl

from mavin_ops.components.close_lineage.component import close_lineage
from mavin_ops.components.evaluate.component import evaluate
from mavin_ops.components.generate_data.component import generate_data
from mavin_ops.components.register_base.component import register_base
from mavin_ops.components.sample_benchmark.component import sample_benchmark
from mavin_ops.components.train.component import train
from mavin_ops.components.validate_data.component import validate_data
from mavin_ops.components.version_data.component import version_data
from mavin_ops.foundation import BASE_WORLD
from mavin_ops.presets import MIN_BASE_SEED as MIN_SEED
from mavin_ops.training.recipes import BASE_STAGE

__all__ = ["PIPELINE_NAME", "pretrain_pipeline"]

PIPELINE_NAME = "mavin-pretrain"


@dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate and register the foundation model releases fine-tune.")
def pretrain_pipeline(
    preset: str = "tiny",
    world_preset: str = "base",
    seed: int = MIN_SEED,
    registry: str = "",
    remote: str = "",
    endpoint_url: str = "",
    max_quarantine_share: float = 0.05,
    steps: int = 0,
    sample_steps: int = 0,
    sample_limit: int = 8,
    train_procs: int = 1,
    release_id: str = "",
):
    kfp_run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    lineage = {"release_id": release_id, "kfp_run_id": kfp_run_id}
    closer = close_lineage(**lineage).set_display_name("close_lineage")
    closer.set_caching_options(False)
    with dsl.ExitHandler(closer, name="pretrain"):
        generated = generate_data(preset=world_preset, seed=seed, **lineage).set_display_name("generate_data")
        versioned = version_data(dataset=generated.outputs["dataset"], name=BASE_WORLD, registry=registry, remote=remote,
                                 endpoint_url=endpoint_url, **lineage).set_display_name("version_data")
        imported = dsl.importer(artifact_uri=versioned.outputs["dataset_uri"], artifact_class=dsl.Dataset, reimport=False)
        imported.set_display_name("dataset")
        validated = validate_data(dataset=imported.output, dataset_digest=versioned.outputs["digest"],
                                  max_quarantine_share=max_quarantine_share, **lineage).set_display_name("validate_data")
        clean = validated.outputs["validated"]
        trained = train(stage=BASE_STAGE, preset=preset, dataset=clean, dataset_digest=versioned.outputs["digest"], steps=steps,
                        procs=train_procs, **lineage).set_display_name(f"train_{BASE_STAGE}")
        trained.set_caching_options(False)  # a rerun with more steps resumes training from its checkpoint
        checkpoint = trained.outputs["checkpoint"]
        sampled = sample_benchmark(checkpoint=checkpoint, dataset=clean, steps=sample_steps, limit=sample_limit,
                                   **lineage).set_display_name("sample_benchmark")
        scored = evaluate(generated=sampled.outputs["generated"], benchmark=clean, limit=sample_limit, **lineage).set_display_name("evaluate")
        register_base(checkpoint=checkpoint, metrics_json=scored.outputs["metrics_json"], dataset_digest=versioned.outputs["digest"],
                      dataset_tag=versioned.outputs["tag"], world_preset=world_preset, seed=seed, metrics_uri=scored.outputs["metrics_uri"],
                      **lineage).set_display_name("register_base").set_caching_options(False)
