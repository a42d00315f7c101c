"""Register the released model version with its whole lineage and promote it to champion."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def register_model(
    checkpoint: Input[Model],
    gate_json: Input[Artifact],
    metrics_uri: str,
    triton_version: int,
    triton_uri: str,
    smoke_passed: bool,
    release_id: str,
    kfp_run_id: str,
    model_name: str = "mavin",
    store: str = "",
) -> NamedTuple("Registered", version=str, champion=str):
    """Only runs on the gate's pass branch. Tags the new model version with the training
    runs, checkpoint hash, dataset digest, gate report, metrics and the published Triton
    version, then moves the ``champion`` alias to it (mavin_ops/registry.py) if, and only if,
    the champion is still the one the gate compared against (compare-and-set on the version
    the ledger's gate record names). The gate's pass is read from the platform's signed ledger,
    matched to this gate.json by its sha256; the version is registered there too. Otherwise the release ends "not promoted: champion changed from
    vN to vM since the gate ran", the alias untouched; a new release (or ``--resume``, whose
    gate is never cached) gates against the new champion."""
    import json
    from collections import namedtuple
    from pathlib import Path

    import mlflow

    from mavin_ops import registry, settings, tracking
    from mavin_ops.data.manifest import sha256_file
    from mavin_ops.safety import check_name

    check_name(model_name, "model name")
    out = namedtuple("Registered", ["version", "champion"])
    if not smoke_passed:
        raise RuntimeError(f"serving smoke test failed for Triton version {triton_version}; not registering")
    gate_path = Path(gate_json.path)
    key = tracking.release_key(release_id, kfp_run_id)
    # The gate's verdict as the signed ledger holds it (gate.json alone is a file anyone could write).
    gate = registry.passed_gate(model_name, key, gate_path)
    gated_against = gate.get("champion")

    def not_promoted(current: str | None, version: str | None) -> None:
        reason = f"champion changed from v{gated_against or '-'} to v{current or '-'} since the gate ran"
        c = tracking.client()
        parent = tracking.parent_run(release_id, kfp_run_id)
        c.set_tag(parent, "mavin.verdict", "not promoted")
        c.set_tag(parent, "mavin.verdict_reason", f"{reason}; run a new release (or --resume) to gate against v{current or '-'}")
        mlflow.set_tags({"mavin.verdict": "not promoted", "mavin.verdict_reason": reason})
        if version is not None:
            # Its gate is stale: a manual `mavin-ops promote` must not move the alias to it either.
            registry.mark_stale(model_name, version, reason)
        print(f"not promoted: {reason}")

    with tracking.step_run(release_id, kfp_run_id, "register_model", {"model_name": model_name, "gated_against": gated_against or "-"}):
        current = registry.champion_version(model_name)
        if current != gated_against:
            not_promoted(current, None)
            return out("", current or "")
        c = tracking.client()
        parent = c.get_run(tracking.parent_run(release_id, kfp_run_id))
        trains = c.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`mavin.step` LIKE 'train%' and attributes.status = 'FINISHED'",
        )
        marker = Path(checkpoint.path) / "MANIFEST.json"
        tags = {
            "mavin.gate": "pass",
            "mavin.gate_report": str(gate_path),
            "mavin.metrics_json": metrics_uri,
            "mavin.release_id": key,
            "mavin.git_commit": parent.data.tags.get("mavin.git_commit", "unknown"),
            "mavin.dataset_digest": parent.data.tags.get("mavin.dataset_digest", ""),
            "mavin.training_runs": ",".join(sorted(r.info.run_id for r in trains)),
            "mavin.checkpoint_sha256": sha256_file(marker) if marker.is_file() else "",
            "mavin.triton_version": str(triton_version),
            "mavin.triton_model": model_name,
            "mavin.triton_store": store or str(settings.home() / "model-store"),
            "mavin.triton_uri": triton_uri,
        }
        # The version's source run is the final training stage's run (MLflow links it in its UI).
        joint = next((r.info.run_id for r in trains if r.data.tags.get("mavin.step") == "train_joint"), None)
        gate_doc = json.loads(gate_path.read_text(encoding="utf-8"))
        tags["mavin.gate_summary"] = "; ".join(
            f"{chk['name']} {chk['challenger']:.4g}" for chk in gate_doc.get("checks", [])
            if isinstance(chk.get("challenger"), (int, float)))[:4000]
        version = registry.register_version(model_name, str(Path(checkpoint.path).resolve()), run_id=joint, tags=tags)
        registry.record_registration(model_name, version, gate, triton_version=triton_version, checkpoint_sha256=tags["mavin.checkpoint_sha256"])
        try:
            record = registry.promote(
                model_name, version, reason=f"release {tags['mavin.release_id']} passed the gate", expected_champion=gated_against
            )
        except registry.PromotionConflict:
            current = registry.champion_version(model_name)
            not_promoted(current, version)
            return out(version, current or "")
        mlflow.set_tags({"mavin.model_version": version, "mavin.promoted": record.line()})
        c.set_tag(parent.info.run_id, "mavin.model_version", f"{model_name}/{version}")
        c.set_tag(parent.info.run_id, "mavin.verdict", "promoted")
    return out(version, registry.champion_version(model_name) or "")


@dsl.component(base_image=IMAGE)
def record_not_promoted(gate_summary: str, release_id: str, kfp_run_id: str) -> str:
    """The gate's fail branch: the release ends as a success whose verdict is "not promoted",
    with the gate's reason on the MLflow parent run. Alias and served version stay as they are."""
    from mavin_ops import tracking

    c = tracking.client()
    parent = tracking.parent_run(release_id, kfp_run_id)
    c.set_tag(parent, "mavin.verdict", "not promoted")
    c.set_tag(parent, "mavin.verdict_reason", gate_summary[:5000])
    line = f"not promoted: {gate_summary}"
    print(line)
    return line
