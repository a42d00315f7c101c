"""ONNX export of every served part: checker, dynamic axes, parity that fails the export,
external data kept inside the folder, lineage in export.json."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from mavin_ops.model.export import DENOISER_INPUTS, DENOISER_OUTPUTS
from mavin_ops.serving import export as ex
from mavin_ops.data.manifest import sha256_file
from mavin_ops.serving.export import ExportError, check_external_data, check_parity, read_export

PARTS = {
    "text_encoder": (["ids", "segment", "position"], ["text"]),
    "denoiser": (list(DENOISER_INPUTS), list(DENOISER_OUTPUTS)),
    "video_decoder": (["latent"], ["frames"]),
    "audio_decoder": (["latent"], ["waveform"]),
}


def test_export_writes_every_part_checked_with_parity_and_lineage(exported, debug_checkpoint, kit):
    info = read_export(exported.path)  # verifies every file's sha256
    assert set(info["parts"]) == set(PARTS)
    for part, (inputs, outputs) in PARTS.items():
        entry = info["parts"][part]
        path = exported.path / entry["file"]
        onnx.checker.check_model(str(path))
        graph = onnx.load(str(path)).graph
        assert [i.name for i in graph.input] == inputs and [o.name for o in graph.output] == outputs
        assert entry["external_data"] == []
        assert 0.0 <= entry["parity_max_abs_diff"] <= 1e-4 and entry["parity_examples"] == 2
        # batch (and sequence) axes are symbolic, not the tracing sizes
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert all(isinstance(i.shape[0], str) for i in sess.get_inputs()), (part, [i.shape for i in sess.get_inputs()])
    den = ort.InferenceSession(str(exported.path / "denoiser.onnx"), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in den.get_inputs()}
    assert isinstance(shapes["video"][1], str) and isinstance(shapes["audio"][1], str) and isinstance(shapes["text"][1], str)
    assert all(isinstance(d, str) for d in shapes["video_text_mask"])  # (B, Nv, L) all dynamic
    assert info["checkpoint"]["sha256"] == sha256_file(debug_checkpoint)
    assert info["model_config"].name == "debug"
    lineage = info["lineage"]
    assert lineage["mlflow_run_id"] == kit.LINEAGE["mlflow_run_id"] and lineage["dataset_digest"] == kit.LINEAGE["dataset_digest"]
    assert lineage["release_id"] == "r-test" and lineage["git_commit"]


def test_exported_parts_match_torch_on_new_shapes(exported, kit):
    """A third shape set the export never saw: batch 1, other lengths."""
    model = kit.debug_model()
    g = torch.Generator().manual_seed(7)
    text_in = {"ids": torch.randint(3, 200, (1, 13), generator=g), "segment": torch.tensor([[1] * 6 + [2] * 7]), "position": torch.tensor([list(range(6)) + list(range(7))])}
    sess = ort.InferenceSession(str(exported.path / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.numpy() for k, v in text_in.items()})[0]
    with torch.no_grad():
        want = model.text_encoder(**text_in).numpy()
    assert got.shape == (1, 13, model.config.text.width) and np.abs(got - want).max() <= 1e-4
    latent = torch.randn((1, model.video_codec.channels, 4, 3, 5), generator=g)
    sess = ort.InferenceSession(str(exported.path / "video_decoder.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"latent": latent.numpy()})[0]
    assert got.shape == (1, 13, 12, 20, 3) and np.abs(got - model.video_codec.decode(latent).numpy()).max() <= 1e-4


def test_check_parity_fails_on_a_wrong_reference(exported, kit):
    model = kit.debug_model()
    examples = ex._examples(model)["audio_decoder"]
    path = exported.path / "audio_decoder.onnx"
    assert check_parity(path, lambda e: ex._reference(model, "audio_decoder", e), examples) <= 1e-4
    off = lambda e: {k: v + 2e-4 for k, v in ex._reference(model, "audio_decoder", e).items()}  # noqa: E731
    with pytest.raises(ExportError, match=r"audio_decoder output 'waveform' differs from torch by 0.0002"):
        check_parity(path, off, examples, part="audio_decoder")
    cut = lambda e: {k: v[:, :-1] for k, v in ex._reference(model, "audio_decoder", e).items()}  # noqa: E731
    with pytest.raises(ExportError, match="shape"):
        check_parity(path, cut, examples, part="audio_decoder")


def test_export_fails_and_leaves_nothing_when_parity_breaks(debug_checkpoint, tmp_path, monkeypatch):
    """A graph that computes something else (here: the audio decoder off by 0.1 %) must fail
    the export, and no export folder may appear."""
    from torch import nn

    class Skewed(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.codec = model.audio_codec

        def forward(self, latent):
            return self.codec.decode(latent) * 1.001 + 1e-3

    monkeypatch.setitem(ex.GRAPH_MODULES, "audio_decoder", Skewed)
    out = tmp_path / "exports" / "onnx"
    with pytest.raises(ExportError, match=r"parity: audio_decoder output 'waveform' differs from torch"):
        ex.export_model(debug_checkpoint, out)
    assert not out.exists()
    assert list((tmp_path / "exports").iterdir()) == []  # the staging folder is gone too


def test_export_refuses_a_non_empty_destination(debug_checkpoint, tmp_path):
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        ex.export_model(debug_checkpoint, out)
    assert (out / "keep.txt").read_text() == "x"


def _model_with_external(tmp_path, location: str):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = k, v
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    folder = tmp_path / "export"
    folder.mkdir(exist_ok=True)
    path = folder / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def test_external_data_must_stay_inside_the_export_folder(tmp_path):
    inside = _model_with_external(tmp_path, "weights.bin")
    with pytest.raises(ExportError, match="does not exist"):
        check_external_data(inside)
    (inside.parent / "weights.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    assert check_external_data(inside) == ["weights.bin"]
    (tmp_path / "outside.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    escaping = _model_with_external(tmp_path, "../outside.bin")
    with pytest.raises(ExportError, match="outside the export folder"):
        check_external_data(escaping)
    absolute = _model_with_external(tmp_path, str(tmp_path / "outside.bin"))
    with pytest.raises(ExportError, match="outside the export folder"):
        check_external_data(absolute)


def test_a_tampered_export_is_refused(exported, tmp_path):
    copy = tmp_path / "onnx"
    shutil.copytree(exported.path, copy)
    data = bytearray((copy / "text_encoder.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "text_encoder.onnx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"text_encoder.onnx does not match its sha256"):
        read_export(copy)
    manifest = json.loads((copy / "export.json").read_text())
    assert manifest["files"]["text_encoder.onnx"]["sha256"] == sha256_file(exported.path / "text_encoder.onnx")


def test_a_training_checkpoint_folder_is_a_source_with_its_lineage(tmp_path, kit):
    """The train component's output: model.safetensors + meta.json + MANIFEST.json."""
    from mavin_ops.model.mavin import CHECKPOINT_FORMAT
    from mavin_ops.training.checkpoint import MANIFEST, save_checkpoint

    model = kit.debug_model(seed=3)
    info = save_checkpoint(
        tmp_path / "joint",
        12,
        tensors={"model.safetensors": model.trainable_state_dict()},
        json_files={"meta.json": {"stage": "joint", "dataset": {"digest": "md5:abc.dir"}, "lineage": {"release_id": "r7", "kfp_run_id": "", "mlflow_run_id": "m42", "git_commit": "c0ffee"}}},
        tensor_metadata={"model.safetensors": {"format": CHECKPOINT_FORMAT, "config": model.config.to_json()}},
    )
    source = ex.load_source(info.path)
    assert source.kind == "training-checkpoint" and source.checkpoint_sha256 == sha256_file(info.path / MANIFEST)
    assert source.lineage == {"release_id": "r7", "mlflow_run_id": "m42", "git_commit": "c0ffee", "dataset_digest": "md5:abc.dir", "stage": "joint"}
    for name, value in model.trainable_state_dict().items():
        assert torch.equal(source.model.state_dict()[name], value), name
    (info.path / "meta.json").write_text("{}")  # tampered: the manifest no longer matches
    with pytest.raises(Exception, match="meta.json"):
        ex.load_source(info.path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ex.load_source(tmp_path / "missing.safetensors")
