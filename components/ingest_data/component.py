"""Ingest real footage (data/ingest.py) as a KFP Dataset artifact, fanned out over shards.

    plan_ingest -> ParallelFor(shard) ingest_shard -> join_ingest

``plan_ingest`` checks the source and deals its videos into at most ``shards`` shares;
each ``ingest_shard`` measures and cuts its share (every core of its pod, a process per
source); ``join_ingest`` merges the shards' media and per-source records into one dataset
(splits decided over all sources) that version_data then versions like a generated one.
Locally the default is one shard using every core."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def plan_ingest(source: str, shards: int, release_id: str, kfp_run_id: str) -> List[str]:
    """The shard specs ``"i/n"`` for the videos under ``source`` (n <= shards, <= videos)."""
    from mavin_ops import tracking
    from mavin_ops.data import ingest

    with tracking.step_run(release_id, kfp_run_id, "plan_ingest", {"source": source, "shards": shards}):
        videos, _ = ingest.find_sources([source])
        if not videos:
            raise ingest.IngestError(f"no video files ({', '.join(ingest.VIDEO_SUFFIXES)}) under {source}")
        n = max(1, min(int(shards), len(videos)))
    return [f"{i}/{n}" for i in range(n)]


@dsl.component(base_image=IMAGE)
def ingest_shard(source: str, shard: str, preset: str, release_id: str, kfp_run_id: str, dataset: Output[Dataset]) -> str:
    """Ingest one share of the videos into ``dataset.path``; returns its counts as JSON."""
    import json

    import mlflow

    from mavin_ops import tracking
    from mavin_ops.data import ingest

    i, n = (int(x) for x in shard.split("/"))
    with tracking.step_run(release_id, kfp_run_id, "ingest_shard", {"source": source, "shard": shard, "preset": preset}):
        report = ingest.ingest([source], dataset.path, preset=preset, progress=False, shard=(i, n))
        mlflow.log_dict(report, "ingest.json")
        mlflow.log_metrics({"ingest/clips": sum(report["counts"]["clips"].values()), "ingest/rejected": report["counts"]["rejected"],
                            "ingest/seconds_of_footage": report["counts"]["seconds_of_footage"]})
    dataset.metadata.update({"shard": shard, "source": source})
    return json.dumps(report["counts"])


@dsl.component(base_image=IMAGE)
def join_ingest(shards: Input[List[Dataset]], preset: str, release_id: str, kfp_run_id: str, dataset: Output[Dataset]) -> str:
    """Merge the shards into one dataset at ``dataset.path``; returns the counts as JSON."""
    import json

    import mlflow

    from mavin_ops import tracking
    from mavin_ops.data import ingest

    with tracking.step_run(release_id, kfp_run_id, "join_ingest", {"preset": preset, "shards": len(shards)}):
        settings = ingest.IngestSettings(preset=ingest.get_preset(preset))
        report = ingest.join([s.path for s in shards], dataset.path, settings)
        mlflow.log_dict(report, "ingest.json")
        mlflow.log_artifact(f"{dataset.path}/{ingest.REJECTED}")
        counts = report["counts"]
        mlflow.log_metrics({"ingest/clips_train": counts["clips"]["train"], "ingest/clips_eval": counts["clips"]["eval"],
                            "ingest/rejected": counts["rejected"], "ingest/sources": counts["sources_ingested"],
                            "ingest/seconds_of_footage": counts["seconds_of_footage"]})
        mlflow.set_tag("mavin.data_kind", "footage")
    dataset.metadata.update({"kind": "footage", "preset": preset})
    return json.dumps(counts)
