"""Validate a dataset version (data/validate.py): Great Expectations suite + MTSS grounding."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def validate_data(
    dataset: Input[Dataset],
    dataset_digest: str,
    max_quarantine_share: float,
    release_id: str,
    kfp_run_id: str,
    report: Output[Artifact],
    page: Output[HTML],
    validated: Output[Dataset],
) -> str:
    """Writes validation.json, quarantine.jsonl, the validated manifest and Data Docs to
    ``report``, logs them to MLflow, and fails the step when the quarantined share passes
    the threshold. Returns the one-line verdict.

    ``validated`` is the validated dataset (only the valid rows and their media, plus the
    record of what was quarantined): the dataset every later step reads, so a quarantined
    clip is never precomputed, trained on, sampled or scored. The quarantined ids and their
    count are tagged on this step's run (``mavin.quarantined_count``, ``mavin.quarantined_ids``)."""
    import shutil
    from pathlib import Path

    import mlflow

    from mavin_ops import tracking
    from mavin_ops.data import validate

    params = {"max_quarantine_share": max_quarantine_share, "dataset_digest": dataset_digest}
    with tracking.step_run(release_id, kfp_run_id, "validate_data", params):
        result = validate.validate_dataset(
            dataset.path, max_quarantine_share=max_quarantine_share, out_dir=report.path, validated_dir=validated.path
        )
        record = validate.quarantine_record(validated.path) if result.passed else None
        if record is not None:
            mlflow.set_tags({"mavin.quarantined_count": str(record.count), "mavin.quarantined_ids": record.ids_text()})
            validated.metadata.update(
                {"rows": result.valid, "quarantined": record.count, "dataset_digest": dataset_digest, "source": dataset.uri}
            )
        mlflow.log_metrics(
            {"rows": result.rows, "quarantined": result.quarantined, "quarantined_share": result.quarantined_share}
        )
        mlflow.log_artifacts(report.path, artifact_path="validation")
        if result.summary_page is not None:
            Path(page.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(result.summary_page, page.path)
        report.metadata.update({"passed": result.passed, "quarantined": result.quarantined, "rows": result.rows})
        print(result.describe())
        if not result.passed:
            raise validate.ValidationFailed(result)
    return result.describe()
