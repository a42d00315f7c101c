"""Publish a built model repository to the model store, atomically (serving/store.py)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Model

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def publish_model(
    repository: Input[Model],
    release_id: str,
    kfp_run_id: str,
    store: str = "",
    name: str = "mavin",
    endpoint_url: str = "",
) -> NamedTuple("Published", uri=str, version=int, manifest_sha256=str):
    """Stage, sha256-verify and make the version visible in one step (a rename locally, a
    final COMPLETE marker on S3). ``store`` is a directory or s3://bucket/prefix
    (``$MAVIN_HOME/model-store`` when empty). Tags the MLflow parent run with the served
    version (``mavin.triton_version``, ``mavin.triton_model``, ``mavin.triton_store``) so
    lineage can walk back from it."""
    from collections import namedtuple

    import mlflow

    from mavin_ops import settings, tracking
    from mavin_ops.serving.spec import ENTRY_MODEL
    from mavin_ops.serving.store import publish

    store = store or str(settings.home() / "model-store")
    with tracking.step_run(release_id, kfp_run_id, "publish_model", {"store": store, "name": name}):
        published = publish(repository.path, store, name=name, endpoint_url=endpoint_url or None)
        tags = {  # the names mavin_ops.lineage reads
            "mavin.triton_version": str(published.version),
            "mavin.triton_model": ENTRY_MODEL,
            "mavin.triton_store": settings.portable(published.uri),
            "mavin.triton_manifest_sha256": published.manifest_sha256,
        }
        mlflow.set_tags(tags)
        c = tracking.client()
        parent = tracking.parent_run(release_id, kfp_run_id)
        for key, value in tags.items():
            c.set_tag(parent, key, value)
        print(f"published {published.uri} ({published.files} files, {'already complete' if published.reused else 'new'})")
    out = namedtuple("Published", ["uri", "version", "manifest_sha256"])
    return out(published.uri, published.version, published.manifest_sha256)
