"""The KFP components export_model, publish_model and serving_smoke_test: thin wrappers whose
wiring (artifacts, outputs, MLflow lineage) is checked by calling them."""

import os

import pytest
from kfp import compiler, dsl
from kfp.dsl import Model

from mavin_ops import tracking
from mavin_ops.components.export_model.component import export_model
from mavin_ops.components.publish_model.component import publish_model
from mavin_ops.components.serving_smoke_test.component import serving_smoke_test
from mavin_ops.serving.repository import read_repository
from mavin_ops.serving.store import list_versions


def test_components_compile_with_their_interfaces(tmp_path):
    expected = {
        export_model: ({"checkpoint", "release_id", "kfp_run_id", "dataset_digest", "version", "store", "store_name", "endpoint_url", "tolerance"}, {"repository", "version", "checkpoint_sha256", "parity_max_abs_diff", "export_sha256"}),
        publish_model: ({"repository", "release_id", "kfp_run_id", "store", "name", "endpoint_url"}, {"uri", "version", "manifest_sha256"}),
        serving_smoke_test: ({"version", "release_id", "kfp_run_id", "store", "name", "endpoint_url", "variant", "protocol", "steps"}, {"passed", "frames", "audio_samples", "refused_status"}),
    }
    for comp, (inputs, outputs) in expected.items():
        path = tmp_path / f"{comp.name}.yaml"
        compiler.Compiler().compile(comp, str(path))
        spec = comp.component_spec
        assert set(spec.inputs) == inputs, comp.name
        assert set(spec.outputs) == outputs, comp.name
        assert path.stat().st_size > 0


def _parent_tags(release_id: str) -> dict[str, str]:
    return tracking.client().get_run(tracking.parent_run(release_id)).data.tags


def _step_runs(release_id: str) -> dict[str, str]:
    c = tracking.client()
    parent = tracking.parent_run(release_id)
    runs = c.search_runs([tracking.experiment_id()], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    return {r.data.tags["mavin.step"]: r.info.status for r in runs}


@pytest.mark.server
def test_publish_and_smoke_test_components(built, tmp_path):
    store = str(tmp_path / "store")
    out = publish_model.python_func(repository=Model(name="repository", uri=str(built.path)), release_id="rel-components", kfp_run_id="", store=store)
    assert out.version == 1 and out.uri == os.path.join(store, "mavin", "1") and len(out.manifest_sha256) == 64
    assert list_versions(store) == [1]
    tags = _parent_tags("rel-components")
    assert tags["mavin.triton_version"] == "1" and tags["mavin.triton_store"] == out.uri and tags["mavin.triton_model"] == "mavin_generate"
    smoke = serving_smoke_test.python_func(version=1, release_id="rel-components", kfp_run_id="", store=store, steps=1)
    assert smoke.passed and smoke.frames == 17 and smoke.audio_samples == 17000 and smoke.refused_status == "400"
    assert _step_runs("rel-components") == {"publish_model": "FINISHED", "serving_smoke_test": "FINISHED"}


@pytest.mark.server
def test_smoke_test_component_fails_on_a_missing_version(built, tmp_path):
    store = str(tmp_path / "store")
    with pytest.raises(Exception, match=r"mavin/3 is not a published version"):
        serving_smoke_test.python_func(version=3, release_id="rel-missing", kfp_run_id="", store=store)
    assert _step_runs("rel-missing") == {"serving_smoke_test": "FAILED"}


@pytest.mark.slow
def test_export_component(debug_checkpoint, tmp_path, kit):
    repo = Model(name="repository", uri=str(tmp_path / "repository"))
    out = export_model.python_func(checkpoint=Model(name="checkpoint", uri=str(debug_checkpoint)), release_id="rel-export", kfp_run_id="", repository=repo, dataset_digest="md5:override.dir", store=str(tmp_path / "store"))
    assert out.version == 1 and out.parity_max_abs_diff <= 1e-4 and len(out.export_sha256) == 64
    info = read_repository(repo.path, verify=True)
    assert info["version"] == 1 and info["checkpoint"]["sha256"] == out.checkpoint_sha256
    assert info["lineage"]["dataset_digest"] == "md5:override.dir" and info["lineage"]["release_id"] == "rel-export"
    assert info["lineage"]["mlflow_run_id"] == kit.LINEAGE["mlflow_run_id"]
    assert repo.metadata["version"] == 1 and set(repo.metadata) >= {"denoiser", "text_encoder", "video_decoder", "audio_decoder"}
    run = tracking.client().search_runs([tracking.experiment_id()], filter_string="tags.`mavin.step` = 'export_model'")[0]
    assert run.info.status == "FINISHED" and run.data.metrics["parity_max_abs_diff.denoiser"] <= 1e-4
    assert run.data.tags["mavin.serving_version"] == "1"


@pytest.mark.slow
@pytest.mark.server
def test_components_run_in_the_kfp_local_runner(debug_checkpoint, tmp_path, isolated_home):
    """export -> publish -> smoke test as a pipeline in the KFP local runner (subprocesses)."""
    from kfp import local

    assert os.environ["MAVIN_HOME"] == str(isolated_home)  # the step subprocesses share this test's state
    store = str(tmp_path / "store")

    @dsl.pipeline(name="serving-release")
    def serving_release(checkpoint_uri: str, store: str):
        ckpt = dsl.importer(artifact_uri=checkpoint_uri, artifact_class=Model, reimport=False)
        exported = export_model(checkpoint=ckpt.output, release_id="rel-local", kfp_run_id="", store=store)
        published = publish_model(repository=exported.outputs["repository"], release_id="rel-local", kfp_run_id="", store=store)
        serving_smoke_test(version=published.outputs["version"], release_id="rel-local", kfp_run_id="", store=store, steps=1)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    serving_release(checkpoint_uri=str(debug_checkpoint), store=store)
    assert list_versions(store) == [1]
    assert _step_runs("rel-local") == {"export_model": "FINISHED", "publish_model": "FINISHED", "serving_smoke_test": "FINISHED"}
    assert _parent_tags("rel-local")["mavin.triton_version"] == "1"
