"""The real tritonserver over the built repository: generation equals in-process ONNX Runtime,
bad requests get 4xx-class errors and the server keeps answering, clean start and stop."""

from __future__ import annotations

import json
import re
import shutil
import socket

import av
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from mavin_ops.data.media import read_video
from mavin_ops.mtss import ScriptError
from mavin_ops.serving.client import RequestRefused, build_request, connect, generate, infer
from mavin_ops.serving.examples import example_script, write_example
from mavin_ops.serving.pipeline import GenerateRequest, local_pipeline
from mavin_ops.serving.server import ServerError, free_port, serve


def _inputs(mod, tensors: dict[str, np.ndarray]):
    out = []
    for name, arr in tensors.items():
        dtype = "BYTES" if arr.dtype == np.object_ else mod.np_to_triton_dtype(arr.dtype)
        item = mod.InferInput(name, list(arr.shape), dtype)
        item.set_data_from_numpy(arr)
        out.append(item)
    return out


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.server
def test_generate_from_a_script_equals_in_process_onnxruntime(triton, exported, tmp_path):
    reference = local_pipeline(exported.path)
    script = write_example(reference.config, tmp_path / "scene")
    request = build_request(script, seed=4, steps=3, guidance=2.0)
    want = reference(request)
    assert want.frames.shape == (17, 16, 16, 3) and want.audio.shape == (17000,)
    for protocol in ("http", "grpc"):
        client = connect(triton.url(protocol), protocol)
        try:
            got = infer(request, client, protocol, url=triton.url(protocol))
        finally:
            client.close()
        assert got.clip_id == "example" and got.fps == 8.0 and got.sample_rate == 8000
        assert np.array_equal(got.frames, want.frames), protocol
        assert np.array_equal(got.audio, want.audio), protocol

    out = generate(script, tmp_path / "scene.mp4", url=triton.http_url, seed=4, steps=3, guidance=2.0)
    assert (out.num_frames, out.height, out.width, out.audio_samples) == (17, 16, 16, 17000)
    frames, fps = read_video(out.path)
    assert fps == 8 and np.array_equal(frames, want.frames)  # lossless mp4: the served frames, exactly
    with av.open(str(out.path)) as container:
        audio = container.streams.audio[0]
        assert audio.sample_rate == 8000 and audio.frames > 0
    out_grpc = generate(script, tmp_path / "scene-grpc.mp4", url=triton.grpc_url, protocol="grpc", seed=4, steps=3, guidance=2.0)
    assert np.array_equal(read_video(out_grpc.path)[0], want.frames)


def _good(client) -> None:
    """The server still answers a valid request."""
    script = example_script(local_config())
    got = client.infer("mavin_generate", _inputs(thttp, GenerateRequest(script, _refs(script), steps=1).to_inputs()))
    assert got.as_numpy("frames").shape == (17, 16, 16, 3)


def local_config():
    from mavin_ops.model import preset

    return preset("debug")


def _refs(script):
    from mavin_ops.serving.examples import example_references

    return example_references(local_config(), script)


def _denoiser_inputs(batch: int, video_dim: int = 48):
    cfg = local_config()
    Nv, Na, L = 8, 4, 5
    rng = np.random.default_rng(0)
    return {
        "video": rng.standard_normal((batch, Nv, video_dim), dtype=np.float32),
        "audio": rng.standard_normal((batch, Na, cfg.audio_token_dim), dtype=np.float32),
        "text": rng.standard_normal((batch, L, cfg.text.width), dtype=np.float32),
        "t": np.full((batch, 1), 0.5, np.float32),
        "video_pos": np.zeros((batch, Nv, 3), np.float32),
        "audio_pos": np.zeros((batch, Na, 1), np.float32),
        "video_role": np.full((batch, Nv), -1, np.int64),
        "audio_role": np.full((batch, Na), -1, np.int64),
        "video_self_mask": np.ones((batch, Nv, Nv), bool),
        "audio_self_mask": np.ones((batch, Na, Na), bool),
        "video_text_mask": np.ones((batch, Nv, L), bool),
        "audio_text_mask": np.ones((batch, Na, L), bool),
        "av_mask": np.ones((batch, Nv, Na), bool),
    }


def _bad_requests():
    cfg = local_config()
    base = example_script(cfg)
    refs = _refs(base)

    def req(script, **kw):
        return GenerateRequest(script, refs if "references" not in kw else kw.pop("references"), steps=1, **kw).to_inputs()

    unknown = json.loads(json.dumps(base))
    unknown["shot"][1]["references_in_shot"].append("R9")
    crowd = json.loads(json.dumps(base))
    for n in range(3, 6):
        crowd["reference"].append({"id": f"R{n + 1}", "category": "person", "semantic_description": f"extra {n}", "appearance_anchor": {"detail_description": "x"}, "reference_image": f"refs/R{n + 1}.png"})
    long = dict(json.loads(json.dumps(base)), duration=120.0)
    long["shot"][-1]["time_range"] = [long["shot"][-1]["time_range"][0], 120.0]
    wrong_dtype = req(base)
    wrong_dtype["seed"] = np.array([1.5], np.float32)
    wrong_shape = req(base)
    wrong_shape["reference_images"] = np.zeros((2, 16, 16, 4), np.uint8)
    return [
        ("oversized script", "mavin_generate", req(long), r"lasts 120 s, over the limit of 16 s"),
        ("oversized batch", "denoiser", _denoiser_inputs(9), r"batch-size must be <= 8"),
        ("wrong dtype", "mavin_generate", wrong_dtype, r"input 'seed' data-type is 'FP32', but model 'mavin_generate' expects 'INT64'"),
        ("wrong shape", "mavin_generate", wrong_shape, r"unexpected shape for input 'reference_images'"),
        ("wrong token width", "denoiser", _denoiser_inputs(1, video_dim=47), r"unexpected shape for input 'video'"),
        ("unknown ids", "mavin_generate", req(unknown), r"shot\[S2\].references_in_shot: \[cited-id\] cites entity 'R9'"),
        ("too many customized roles", "mavin_generate", req(crowd), r"\[max-customized-roles\] 5 customized roles .* at most 3"),
    ]


@pytest.mark.server
@pytest.mark.parametrize("case", range(7), ids=[c[0] for c in _bad_requests()])
def test_bad_requests_get_4xx_and_the_server_keeps_answering(triton, case):
    name, model, tensors, match = _bad_requests()[case]
    client = thttp.InferenceServerClient(triton.http_url)
    try:
        with pytest.raises(InferenceServerException) as err:
            client.infer(model, _inputs(thttp, tensors))
        assert err.value.status() == "400", (name, err.value.status(), err.value.message())
        assert re.search(match, err.value.message()), (name, err.value.message())
        _good(client)
    finally:
        client.close()


@pytest.mark.server
def test_grpc_refusal_is_invalid_argument_and_named(triton):
    base = example_script(local_config())
    base["event"][0]["speaker"] = "R8"
    request = GenerateRequest(base, _refs(base), steps=1)
    client = connect(triton.grpc_url, "grpc")
    try:
        with pytest.raises(RequestRefused, match=r"refused the request \(StatusCode.INVALID_ARGUMENT\): .*speaker 'R8' is not declared"):
            infer(request, client, "grpc", url=triton.grpc_url)
        ok = client.infer("mavin_generate", _inputs(tgrpc, GenerateRequest(example_script(local_config()), _refs(base), steps=1).to_inputs()))
        assert ok.as_numpy("audio").shape == (17000,)
    finally:
        client.close()


def test_the_client_refuses_a_bad_script_before_sending_anything(tmp_path):
    """Nothing listens at the URL: a bad script must fail on its own, never reach the network."""
    cfg = local_config()
    path = write_example(cfg, tmp_path / "scene")
    url = f"127.0.0.1:{free_port()}"
    data = json.loads(path.read_text())
    data["shot"][0]["active_events"].append("E9")
    path.write_text(json.dumps(data))
    with pytest.raises(ScriptError, match=r"shot\[S1\].active_events: \[cited-id\] cites event 'E9'"):
        generate(path, tmp_path / "x.mp4", url=url)
    path.write_text("{\"clip_id\": ")
    with pytest.raises(ScriptError, match="not valid JSON at line 1"):
        generate(path, tmp_path / "x.mp4", url=url)
    data["shot"][0]["active_events"].remove("E9")
    path.write_text(json.dumps(data))
    (tmp_path / "scene" / "refs" / "R2.png").unlink()
    with pytest.raises(FileNotFoundError, match="reference image of R2"):
        generate(path, tmp_path / "x.mp4", url=url)
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.server
def test_serve_starts_on_loopback_and_stops_cleanly(built):
    server = serve(built.path, exit_timeout_s=3)
    try:
        assert server.variant == "python" and server.host == "127.0.0.1" and server.ready()
        client = thttp.InferenceServerClient(server.http_url)
        try:
            assert client.is_server_ready() and sorted(m["name"] for m in client.get_model_repository_index()) == sorted(server.models)
            meta = client.get_model_metadata("mavin_generate")
            assert [i["name"] for i in meta["inputs"]][:2] == ["script", "seed"]
        finally:
            client.close()
    finally:
        code = server.stop()
    assert code == 0, server.log_tail()
    assert not server.alive() and _port_closed(server.http_port) and _port_closed(server.grpc_port)
    assert not server.workdir.exists()  # a clean exit leaves no temp files
    assert not list(built.path.rglob("__pycache__"))  # Triton served a private copy


@pytest.mark.server
def test_serve_reports_what_it_cannot_load(built, tmp_path):
    with pytest.raises(ServerError, match=r"no onnxruntime backend \(it has python\); serve the 'python' variant"):
        serve(built.path, variant="onnxruntime")
    broken = tmp_path / "repo"
    shutil.copytree(built.path, broken)
    (broken / "python" / "video_decoder" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ServerError, match=r"tritonserver exited with code 1 while loading .*load failed for model 'video_decoder'"):
        serve(broken, exit_timeout_s=2, ready_timeout_s=120)


@pytest.mark.server
def test_run_server_serves_a_published_version_until_interrupted(built, tmp_path):
    """What `mavin-ops serve --store DIR` does: fetch the newest complete version, serve it,
    stop cleanly on SIGINT."""
    import signal
    import subprocess
    import sys
    import time

    from mavin_ops.serving.store import publish

    store = tmp_path / "store"
    publish(built.path, store)
    http, grpc, metrics = free_port(), free_port(), free_port()
    code = (
        "from mavin_ops.serving.server import run_server; import sys; "
        f"sys.exit(run_server(store={str(store)!r}, http_port={http}, grpc_port={grpc}, metrics_port={metrics}, exit_timeout_s=3))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.time() + 180
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        assert any("tritonserver ready: python variant" in ln for ln in lines), "".join(lines)
        assert any(f"HTTP  127.0.0.1:{http}" in ln for ln in lines)
        client = thttp.InferenceServerClient(f"127.0.0.1:{http}")
        try:
            assert client.is_model_ready("mavin_generate") and client.is_model_ready("denoiser")
        finally:
            client.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.stdout.read()
        assert _port_closed(http) and _port_closed(grpc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
