"""Quarantine is enforced: validation's quarantined clips never reach latent
precompute, training batches or the benchmark, and the training run records which clips were
left out.

(No `from __future__ import annotations` here: KFP reads the components' annotations as types.)"""

import shutil
from pathlib import Path

import pytest
import yaml
from kfp import dsl

from mavin_ops import tracking
from mavin_ops.components.sample_benchmark.component import sample_benchmark
from mavin_ops.components.train.component import train
from mavin_ops.components.validate_data.component import validate_data
from mavin_ops.data import manifest, validate
from mavin_ops.evaluation.runner import EvaluationError, evaluate_dir
from mavin_ops.evaluation.samples import generate_benchmark
from mavin_ops.training import data as tdata
from train_helpers import stage_runs

BAD_TRAIN = "c000001"  # a media sha256 that does not match the file
BAD_EVAL = "c000004"  # a script that belongs to another clip


@pytest.fixture
def broken_dataset(debug_dataset, tmp_path) -> Path:
    """The debug dataset (4 train + 2 eval clips) with one broken train clip and one broken
    benchmark clip: 2 of 6 rows are quarantined."""
    root = tmp_path / "broken"
    shutil.copytree(debug_dataset, root)
    rows = [line.row for line in manifest.read_manifest(root)]
    by_id = {r["id"]: r for r in rows}
    assert by_id[BAD_TRAIN]["split"] == "train" and by_id[BAD_EVAL]["split"] == "eval"
    by_id[BAD_TRAIN]["sha256"][by_id[BAD_TRAIN]["video"]] = "0" * 64
    by_id[BAD_EVAL]["script"]["clip_id"] = "c999999"
    manifest.write_manifest(root, rows)
    return root


def _validate(dataset: Path, tmp_path: Path, share: float = 0.5) -> dsl.Dataset:
    validated = dsl.Dataset(uri=str(tmp_path / "validated"))
    verdict = validate_data.python_func(
        dataset=dsl.Dataset(uri=str(dataset)),
        dataset_digest="digest-under-test",
        max_quarantine_share=share,
        release_id="rel-quarantine",
        kfp_run_id="",
        report=dsl.Artifact(uri=str(tmp_path / "report")),
        page=dsl.HTML(uri=str(tmp_path / "page.html")),
        validated=validated,
    )
    assert "PASSED" in verdict and "2 of 6 rows quarantined" in verdict
    return validated


def test_quarantined_clips_never_reach_precompute_training_or_the_benchmark(broken_dataset, tmp_path, toy):
    validated = _validate(broken_dataset, tmp_path)
    clean = Path(validated.path)
    kept = [r["id"] for r in validate.read_clips(clean)]
    assert BAD_TRAIN not in kept and BAD_EVAL not in kept and len(kept) == 4
    [val_run] = stage_runs("validate_data")
    assert val_run.data.tags["mavin.quarantined_count"] == "2"
    assert set(val_run.data.tags["mavin.quarantined_ids"].split(",")) == {BAD_TRAIN, BAD_EVAL}

    # Latent precompute (the DVC stage and the trainer's first step) encodes only kept clips.
    index = tdata.precompute(clean, toy, tmp_path / "latents")
    assert [c["id"] for c in index.clips] == ["c000000", "c000002", "c000003"]

    # Training: the run's latents index (what every batch is drawn from) lacks the broken clip,
    # and the run's lineage names what was quarantined.
    ckpt_out = dsl.Model(uri=str(tmp_path / "ck-id"))
    out = train.python_func(
        stage="id", preset="debug", dataset=validated, dataset_digest="digest-under-test", release_id="rel-quarantine",
        kfp_run_id="", checkpoint=ckpt_out, steps=2,
    )
    run = tracking.client().get_run(out.run_id)
    assert run.data.tags["mavin.quarantined_count"] == "2"
    assert set(run.data.tags["mavin.quarantined_ids"].split(",")) == {BAD_TRAIN, BAD_EVAL}
    assert run.data.tags["mavin.dataset_validated"] == "true"
    trained_on = tdata.read_index(run.data.params["latents_index"])
    ids = [c["id"] for c in trained_on.clips]
    assert BAD_TRAIN not in ids and sorted(ids) == ["c000000", "c000002", "c000003"]
    schedule = tdata.BatchSchedule(trained_on, [("all", 1.0)], batch=2, seed=0)
    drawn = {trained_on.clips[i]["id"] for step in range(8) for i in schedule.batch(step)}
    assert BAD_TRAIN not in drawn

    # Benchmark sampling generates only the kept eval clip, and the evaluator scores exactly it.
    generated = dsl.Dataset(uri=str(tmp_path / "generated"))
    n = sample_benchmark.python_func(
        checkpoint=ckpt_out, dataset=validated, release_id="rel-quarantine", kfp_run_id="", generated=generated, steps=1
    )
    gen_ids = [line.row["id"] for line in manifest.read_manifest(generated.path)]
    assert n == 1 and gen_ids == ["c000005"]
    [sample_run] = stage_runs("sample_benchmark")
    assert sample_run.data.tags["mavin.quarantined_count"] == "2"
    result = evaluate_dir(generated.path, clean, tmp_path / "eval")
    assert result["benchmark"]["n_clips"] == 1 and [c["id"] for c in result["clips"]] == ["c000005"]


def test_a_validated_dataset_whose_manifest_was_swapped_back_is_refused(broken_dataset, tmp_path, toy):
    """The one loader checks that a validated dataset's manifest is the one validation wrote:
    copying the full source manifest back in (quarantined rows included) is refused by
    precompute, benchmark sampling and the evaluator alike, with a one-line error."""
    report = validate.validate_dataset(broken_dataset, out_dir=tmp_path / "out", validated_dir=tmp_path / "clean", max_quarantine_share=0.5, build_docs=False)
    assert report.passed and report.quarantined == 2
    clean = tmp_path / "clean"
    shutil.copyfile(broken_dataset / manifest.MANIFEST, clean / manifest.MANIFEST)
    with pytest.raises(tdata.DataError) as err:
        tdata.precompute(clean, toy, tmp_path / "latents")
    assert "not the manifest validation wrote" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(validate.DatasetError, match="not the manifest validation wrote"):
        generate_benchmark(object(), clean, tmp_path / "gen")
    with pytest.raises(EvaluationError, match="not the manifest validation wrote"):
        evaluate_dir(clean, clean, tmp_path / "eval")


def test_a_failed_validation_writes_no_validated_dataset(broken_dataset, tmp_path):
    report = validate.validate_dataset(broken_dataset, out_dir=tmp_path / "out", validated_dir=tmp_path / "clean", max_quarantine_share=0.05, build_docs=False)
    assert not report.passed and not (tmp_path / "clean").exists()


def test_release_pipeline_steps_after_validation_read_the_validated_dataset(tmp_path):
    """Compiled IR: every train stage, sample_benchmark and evaluate take their dataset from
    validate_data's ``validated`` output, never from the imported (unvalidated) dataset."""
    from kfp import compiler

    from mavin_ops.pipelines.release import release_pipeline

    out = tmp_path / "release.yaml"
    compiler.Compiler().compile(release_pipeline, str(out))
    spec = yaml.safe_load(out.read_text())
    consumers = {}
    for comp in spec["components"].values():
        for name, task in (comp.get("dag") or {}).get("tasks", {}).items():
            arts = task.get("inputs", {}).get("artifacts", {})
            for key in ("dataset", "benchmark"):
                if key in arts and (name.startswith(("train", "sample-benchmark", "evaluate"))):
                    consumers[name] = arts[key]["taskOutputArtifact"]
    assert {"train", "train-2", "train-3", "train-4", "sample-benchmark", "evaluate"} <= set(consumers), sorted(consumers)
    for name, source in consumers.items():
        assert source == {"producerTask": "validate-data", "outputArtifactKey": "validated"}, (name, source)
    outputs = spec["components"]["comp-validate-data"]["outputDefinitions"]["artifacts"]
    assert outputs["validated"]["artifactType"]["schemaTitle"] == "system.Dataset"
