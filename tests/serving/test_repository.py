"""The Triton model repository: both variants from one description, configs that match the
ONNX graphs, numbered versions, lineage beside the weights."""

from __future__ import annotations

import json
import shutil

import onnxruntime as ort
import pytest

from mavin_ops.model import preset
from mavin_ops.model.export import DENOISER_INPUTS
from mavin_ops.serving.repository import MODEL_INFO, build_repository, read_repository
from mavin_ops.serving.spec import ENTRY_MODEL, PART_MODELS, ServingLimits, describe, io_signature, parse_config

ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64", "tensor(bool)": "TYPE_BOOL"}


def _config(root, variant, model):
    return (root / variant / model / "config.pbtxt").read_text()


def test_both_variants_declare_the_same_inputs_and_outputs(built):
    root = built.path
    info = read_repository(root, verify=True)
    assert info["variants"] == ["onnxruntime", "python"] and info["models"] == [*PART_MODELS, ENTRY_MODEL]
    for model in info["models"]:
        a, b = _config(root, "onnxruntime", model), _config(root, "python", model)
        assert io_signature(a) == io_signature(b), model
        assert io_signature(a)["inputs"], model
        ca, cb = parse_config(a), parse_config(b)
        if model == ENTRY_MODEL:
            assert ca.backend == cb.backend == "python" and ca.max_batch_size == 0
        else:
            assert ca.platform == "onnxruntime_onnx" and ca.backend == "" and ca.default_model_filename == "model.onnx"
            assert cb.backend == "python" and cb.platform == ""
            for c in (ca, cb):
                assert c.max_batch_size == 8 and c.HasField("dynamic_batching")
                assert c.instance_group[0].count == 1 and len(c.model_warmup) == 1
                assert set(c.model_warmup[0].inputs) == {i.name for i in c.input}


def test_configs_match_the_onnx_graphs(built):
    """Every ONNX model's config names its graph's inputs in order, with the graph's types,
    and static dims where the graph has them (the batch dim is Triton's)."""
    root = built.path / "onnxruntime"
    for model in PART_MODELS:
        cfg = parse_config((root / model / "config.pbtxt").read_text())
        sess = ort.InferenceSession(str(root / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        graph_inputs = sess.get_inputs()
        assert [i.name for i in cfg.input] == [i.name for i in graph_inputs], model
        for c, g in zip(cfg.input, graph_inputs):
            from tritonclient.grpc import model_config_pb2 as pb

            assert pb.DataType.Name(c.data_type) == ORT_TYPES[g.type], (model, c.name)
            model_dims = list(c.reshape.shape) if c.HasField("reshape") else list(c.dims)
            assert len(model_dims) == len(g.shape) - 1, (model, c.name)
            for d, gd in zip(model_dims, g.shape[1:]):
                assert d == -1 or d == gd, (model, c.name, model_dims, g.shape)
        assert [o.name for o in cfg.output] == [o.name for o in sess.get_outputs()]
    den = parse_config((root / "denoiser" / "config.pbtxt").read_text())
    assert [i.name for i in den.input] == list(DENOISER_INPUTS)


def test_weights_carry_config_checkpoint_hash_and_lineage(built, exported, kit):
    for variant in ("onnxruntime", "python"):
        for model in (*PART_MODELS, ENTRY_MODEL):
            vdir = built.path / variant / model / "1"
            info = json.loads((vdir / MODEL_INFO).read_text())
            assert info["version"] == 1 and info["model"] == model and info["variant"] == variant
            assert info["checkpoint"]["sha256"] == exported.manifest["checkpoint"]["sha256"]
            assert info["config"]["name"] == "debug"
            for key in ("mlflow_run_id", "dataset_digest"):
                assert info["lineage"][key] == kit.LINEAGE[key]
            assert info["lineage"]["git_commit"]
            if model != ENTRY_MODEL:
                assert (vdir / "model.onnx").is_file()
                assert info["onnx"]["sha256"] == exported.manifest["files"][f"{model}.onnx"]["sha256"]
            assert (vdir / "model.py").is_file() == (variant == "python" or model == ENTRY_MODEL)
    sampler = json.loads((built.path / "python" / ENTRY_MODEL / "1" / MODEL_INFO).read_text())
    assert sampler["parts_io"]["denoiser"]["t"] == {"dims": [1], "reshape": []}


def test_numbered_versions_and_batching_options(exported, tmp_path):
    out = build_repository(exported.path, tmp_path / "repo", version=3, variants=("python",), dynamic_batching=False, instances=2)
    assert read_repository(out.path)["variants"] == ["python"]
    assert not (out.path / "onnxruntime").exists()
    for model in (*PART_MODELS, ENTRY_MODEL):
        assert sorted(p.name for p in (out.path / "python" / model).iterdir() if p.is_dir()) == ["3"]
    cfg = parse_config((out.path / "python" / "denoiser" / "config.pbtxt").read_text())
    assert not cfg.HasField("dynamic_batching") and cfg.instance_group[0].count == 2
    with pytest.raises(FileExistsError, match="not empty"):
        build_repository(exported.path, tmp_path / "repo")


def test_description_refuses_bad_settings():
    cfg = preset("debug")
    with pytest.raises(ValueError, match="version must be >= 1"):
        describe(cfg, version=0)
    with pytest.raises(ValueError, match="max_batch_size must be >= 2"):
        describe(cfg, max_batch_size=1)


def test_limits_travel_through_the_config_parameters():
    cfg = preset("debug")
    lim = ServingLimits(max_duration_s=4.5, max_steps=7, max_customized_roles=2).resolved(cfg)
    assert lim.max_reference_side == 2 * 16 and lim.max_customized_roles == 2
    assert ServingLimits.from_parameters(lim.to_parameters()) == lim
    spec = describe(cfg, limits=ServingLimits(max_customized_roles=10))
    assert spec.limits.max_customized_roles == cfg.denoiser.max_roles  # never above what the model takes


def test_a_tampered_repository_is_refused(built, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(built.path, copy)
    cfg = copy / "python" / "denoiser" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("max_batch_size: 8", "max_batch_size: 64"))
    with pytest.raises(ValueError, match=r"denoiser/config.pbtxt is missing or does not match its sha256"):
        read_repository(copy, verify=True)
