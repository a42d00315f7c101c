"""Version a dataset directory in the DVC data registry (data/versioning.py)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def version_data(
    dataset: Input[Dataset],
    name: str,
    registry: str,
    remote: str,
    endpoint_url: str,
    release_id: str,
    kfp_run_id: str,
) -> NamedTuple("DatasetVersion", digest=str, commit=str, tag=str, registry=str, dataset_uri=str):
    """dvc add + git commit + tag + dvc push; logs the dataset to MLflow with its digest and
    tags the parent run with the dataset lineage. Empty strings mean the defaults.
    ``dataset_uri`` is the versioned artifact's URI, which the release pipeline merges with
    resolve_data's (dsl.OneOf) and imports as the dataset every later step reads."""
    from collections import namedtuple

    import mlflow

    from mavin_ops import tracking
    from mavin_ops.data import manifest, versioning

    with tracking.step_run(release_id, kfp_run_id, "version_data", {"name": name}):
        v = versioning.version_dataset(
            dataset.path, name=name, registry=registry or None, remote=remote or None, endpoint_url=endpoint_url or None
        )
        rows = [line.row for line in manifest.read_manifest(dataset.path) if line.row is not None]
        tracking.log_dataset_input(rows, name=name, digest=v.digest, source=v.remote or v.registry, context="versioned")
        mlflow.log_dict(v.to_dict(), "dataset_version.json")
        lineage = {"mavin.dataset_digest": v.digest, "mavin.dataset_commit": v.commit, "mavin.dataset_tag": v.tag}
        mlflow.set_tags(lineage)
        c = tracking.client()
        parent = tracking.parent_run(release_id, kfp_run_id)
        for key, value in lineage.items():
            c.set_tag(parent, key, value)
    out = namedtuple("DatasetVersion", ["digest", "commit", "tag", "registry", "dataset_uri"])
    return out(v.digest, v.commit, v.tag, v.registry, dataset.uri)
