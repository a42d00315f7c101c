"""The release pipeline (Kubeflow Pipelines v2).

    generate data -> version data (or, with dataset_rev set: resolve data; with source set:
    plan ingest -> ingest shards (ParallelFor) -> join ingest -> version data) -> validate data
    -> train id -> multishot -> av -> joint
    -> sample benchmark -> evaluate -> gate -> if pass: export -> publish -> serving smoke
    test -> register and promote; else: record "not promoted" with the gate's reason.
    An exit handler closes the MLflow parent run with the true final status.

Every step is a component in components/<name>/ that calls a library function; the
embedded default runs it with the KFP local runner (``mavin-ops release``), a cluster
compiles it to IR YAML (``mavin-ops compile``).

Lineage: every step receives ``release_id`` (set by the caller; empty on a cluster, where the
KFP run id stands in) and the KFP run id, and logs a nested MLflow run under the parent run
of that release (mavin_ops/tracking.py).

Data: with ``dataset_rev`` empty (the embedded default) the run generates a dataset and
versions it in the DVC registry; with ``dataset_rev`` set (a tag such as
``mavinset-mini-v3``, a registry commit, or ``latest`` = the newest version when the run
starts, what scheduled cluster runs use) resolve_data pulls that version from the registry
instead; with ``source`` set (a folder of the team's own videos, a path the steps can read:
a mounted volume on a cluster) the footage is ingested (components/ingest_data) over
``ingest_shards`` shards and versioned. Every branch tags the parent run with the digest, tag and commit it used. The
branches' digest and dataset URI are merged with ``dsl.OneOf`` and the URI is imported as
the Dataset artifact validate_data reads: the KFP local runner (2.17) merges parameters with
OneOf but refuses an artifact OneOf ("Expected 1 artifact in ArtifactSelectorSpec").
validate_data outputs the validated dataset (the valid rows and their media, and the record
of the quarantined ids): training, benchmark sampling and evaluation read that one, so a
quarantined clip never reaches them.
"""

from typing import Callable

from kfp import dsl
from kfp.dsl import Dataset

from mavin_ops.components.close_lineage.component import close_lineage
from mavin_ops.components.evaluate.component import evaluate
from mavin_ops.components.export_model.component import export_model
from mavin_ops.components.gate.component import gate
from mavin_ops.components.generate_data.component import generate_data
from mavin_ops.components.ingest_data.component import ingest_shard, join_ingest, plan_ingest
from mavin_ops.components.publish_model.component import publish_model
from mavin_ops.components.register_model.component import record_not_promoted, register_model
from mavin_ops.components.resolve_data.component import resolve_data
from mavin_ops.components.sample_benchmark.component import sample_benchmark
from mavin_ops.components.serving_smoke_test.component import serving_smoke_test
from mavin_ops.components.train.component import train
from mavin_ops.components.validate_data.component import validate_data
from mavin_ops.components.version_data.component import version_data
from mavin_ops.training.recipes import STAGES

__all__ = ["PIPELINE_NAME", "Platform", "build_release_pipeline", "release_pipeline"]

PIPELINE_NAME = "mavin-release"

#: Called for every task with its step name; sets cluster-only settings (image, GPUs, node
#: selectors, tolerations, volumes, secrets). See pipelines/cluster.py.
Platform = Callable[[dsl.PipelineTask, str], None]


def _local(task: dsl.PipelineTask, step: str) -> None:
    """The embedded default needs no platform settings."""


def build_release_pipeline(platform: Platform = _local):
    """The release pipeline with ``platform`` applied to every task."""

    def step(task: dsl.PipelineTask, name: str, display: str) -> dsl.PipelineTask:
        # One spelling everywhere (logs, MLflow, pages): train_multishot, never "train-2".
        task.set_display_name(display.replace(" ", "_"))
        platform(task, name)
        return task

    @dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate, gate and release a MAVIN-style model.")
    def release_pipeline(
        preset: str = "tiny",
        seed: int = 0,
        dataset_name: str = "mavinset-mini",
        dataset_rev: str = "",
        registry: str = "",
        remote: str = "",
        endpoint_url: str = "",
        max_quarantine_share: float = 0.05,
        train_steps: int = 0,
        sample_steps: int = 0,
        sample_limit: int = 0,
        model_name: str = "mavin",
        model_store: str = "",
        gate_policy: str = "",
        release_id: str = "",
        source: str = "",
        ingest_shards: int = 1,
        train_procs: int = 1,
        base: str = "",
    ):
        kfp_run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        lineage = {"release_id": release_id, "kfp_run_id": kfp_run_id}
        closer = step(close_lineage(**lineage), "close_lineage", "close lineage")
        closer.set_caching_options(False)  # it must close the parent run of every attempt, even a resumed one
        with dsl.ExitHandler(closer, name="release"):
            with dsl.If(dataset_rev != "", name="registry-data"):
                resolved = step(
                    resolve_data(dataset_rev=dataset_rev, name=dataset_name, registry=registry, **lineage),
                    "resolve_data",
                    "resolve data",
                )
                # "latest" means the newest version when this run starts: never a cached answer.
                resolved.set_caching_options(False)
            with dsl.Elif(source != "", name="footage"):
                # Real footage: plan the shards, ingest each (ParallelFor: pods on a cluster),
                # join them into one dataset, version it like a generated one.
                planned = step(plan_ingest(source=source, shards=ingest_shards, **lineage), "plan_ingest", "plan ingest")
                planned.set_caching_options(False)  # the folder's contents may have changed
                with dsl.ParallelFor(planned.output, name="ingest-shards") as shard:
                    shard_task = step(ingest_shard(source=source, shard=shard, preset=preset, **lineage), "ingest_shard", "ingest shard")
                joined = step(
                    join_ingest(shards=dsl.Collected(shard_task.outputs["dataset"]), preset=preset, **lineage), "join_ingest", "join ingest"
                )
                ingested = step(
                    version_data(dataset=joined.outputs["dataset"], name=dataset_name, registry=registry, remote=remote,
                                 endpoint_url=endpoint_url, **lineage),
                    "version_data",
                    "version data",
                )
            with dsl.Else(name="fresh-data"):
                generated = step(generate_data(preset=preset, seed=seed, **lineage), "generate_data", "generate data")
                versioned = step(
                    version_data(
                        dataset=generated.outputs["dataset"],
                        name=dataset_name,
                        registry=registry,
                        remote=remote,
                        endpoint_url=endpoint_url,
                        **lineage,
                    ),
                    "version_data",
                    "version data",
                )
            digest = dsl.OneOf(resolved.outputs["digest"], ingested.outputs["digest"], versioned.outputs["digest"])
            dataset_uri = dsl.OneOf(resolved.outputs["dataset_uri"], ingested.outputs["dataset_uri"], versioned.outputs["dataset_uri"])
            imported = dsl.importer(artifact_uri=dataset_uri, artifact_class=Dataset, reimport=False)
            imported.set_display_name("dataset")
            dataset = imported.output
            validated = step(
                validate_data(
                    dataset=dataset,
                    dataset_digest=digest,
                    max_quarantine_share=max_quarantine_share,
                    **lineage,
                ),
                "validate_data",
                "validate data",
            )
            # Every step after validation reads the validated dataset (only the clips validation
            # kept, plus the record of what it quarantined), never the imported one.
            clean = validated.outputs["validated"]
            # The id stage fine-tunes the foundation model ``base`` names ("" = the one shipped for
            # the preset; mavin_ops/foundation.py); each later stage starts from the one before.
            previous = None
            for stage in STAGES:
                extra = {"parent_checkpoint": previous.outputs["checkpoint"]} if previous is not None else {"base": base}
                task = train(stage=stage, preset=preset, dataset=clean, dataset_digest=digest, steps=train_steps, procs=train_procs,
                             **extra, **lineage)
                previous = step(task, "train", f"train {stage}")
            checkpoint = previous.outputs["checkpoint"]
            sampled = step(
                sample_benchmark(checkpoint=checkpoint, dataset=clean, steps=sample_steps, limit=sample_limit, **lineage),
                "sample_benchmark",
                "sample benchmark",
            )
            scored = step(
                evaluate(generated=sampled.outputs["generated"], benchmark=clean, limit=sample_limit, **lineage), "evaluate", "evaluate"
            )
            decided = step(
                gate(metrics_json=scored.outputs["metrics_json"], policy_path=gate_policy, model_name=model_name, **lineage),
                "gate",
                "gate",
            )
            # The champion may have changed since an earlier attempt gated: a resumed release
            # always gates again, against the champion of now.
            decided.set_caching_options(False)
            with dsl.If(decided.outputs["decision"] == "pass", name="gate-passed"):
                exported = step(
                    export_model(checkpoint=checkpoint, dataset_digest=digest, store=model_store, store_name=model_name, endpoint_url=endpoint_url, **lineage),
                    "export_model",
                    "export",
                )
                published = step(
                    publish_model(repository=exported.outputs["repository"], store=model_store, name=model_name, endpoint_url=endpoint_url, **lineage),
                    "publish_model",
                    "publish",
                )
                smoke = step(
                    serving_smoke_test(version=published.outputs["version"], store=model_store, name=model_name, endpoint_url=endpoint_url, **lineage),
                    "serving_smoke_test",
                    "serving smoke test",
                )
                registered = step(
                    register_model(
                        checkpoint=checkpoint,
                        gate_json=decided.outputs["gate_json"],
                        metrics_uri=scored.outputs["metrics_uri"],
                        triton_version=published.outputs["version"],
                        triton_uri=published.outputs["uri"],
                        smoke_passed=smoke.outputs["passed"],
                        model_name=model_name,
                        store=model_store,
                        **lineage,
                    ),
                    "register_model",
                    "register and promote",
                )
                registered.set_caching_options(False)  # it moves the alias: never replayed from a cache
            with dsl.Else(name="gate-failed"):
                step(record_not_promoted(gate_summary=decided.outputs["summary"], **lineage), "record_not_promoted", "record_not_promoted")

    return release_pipeline


release_pipeline = build_release_pipeline()
