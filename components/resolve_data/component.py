"""Resolve a dataset version already in the DVC data registry (data/versioning.py) and pull it.

The release pipeline runs this instead of generate_data -> version_data when the
``dataset_rev`` parameter is set: a recurring run with ``dataset_rev=latest`` trains on the
newest ``<name>-v<N>`` version that exists when the run starts, and records which one."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def resolve_data(
    dataset_rev: str,
    name: str,
    registry: str,
    release_id: str,
    kfp_run_id: str,
    dataset: Output[Dataset],
) -> NamedTuple("ResolvedDataset", digest=str, commit=str, tag=str, registry=str, dataset_uri=str):
    """Resolve ``dataset_rev`` (a tag, a registry commit or ``latest``) in the registry (empty
    = the default one), pull those bytes from the DVC remote into ``dataset``, log the
    dataset to MLflow with its digest and tag the parent run with the dataset lineage
    (``mavin.dataset_digest``, ``mavin.dataset_commit``, ``mavin.dataset_tag``,
    ``mavin.dataset_rev``). Fails with a one-line error for an unknown rev or an empty registry."""
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    import mlflow

    from mavin_ops import tracking
    from mavin_ops.data import manifest, versioning

    with tracking.step_run(release_id, kfp_run_id, "resolve_data", {"name": name, "dataset_rev": dataset_rev}):
        v = versioning.resolve_version(registry or None, name=name, rev=dataset_rev)
        dest = Path(dataset.path)
        with tempfile.TemporaryDirectory(prefix="resolve-data-") as tmp:
            # Pull the resolved commit (not the rev): a tag moved or a version added while
            # this step runs cannot change what is recorded below.
            pulled = versioning.pull_version(v.registry, v.commit, Path(tmp) / "registry", name=name)
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(pulled, dest)
        rows = [line.row for line in manifest.read_manifest(dest) if line.row is not None]
        tracking.log_dataset_input(rows, name=name, digest=v.digest, source=v.remote or v.registry, context="resolved")
        mlflow.log_dict({**v.to_dict(), "requested_rev": dataset_rev}, "dataset_version.json")
        lineage = {
            "mavin.dataset_digest": v.digest,
            "mavin.dataset_commit": v.commit,
            "mavin.dataset_tag": v.tag,
            "mavin.dataset_rev": dataset_rev,
        }
        mlflow.set_tags(lineage)
        c = tracking.client()
        parent = tracking.parent_run(release_id, kfp_run_id)
        for key, value in lineage.items():
            c.set_tag(parent, key, value)
    dataset.metadata.update({"digest": v.digest, "tag": v.tag, "commit": v.commit, "requested_rev": dataset_rev})
    out = namedtuple("ResolvedDataset", ["digest", "commit", "tag", "registry", "dataset_uri"])
    return out(v.digest, v.commit, v.tag, v.registry, dataset.uri)
