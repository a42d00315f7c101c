"""The denoiser step exports to ONNX (dynamo exporter), masks as inputs, and matches torch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from mavin_ops.model import ClipInput
from mavin_ops.model.export import DENOISER_INPUTS, DENOISER_OUTPUTS, denoiser_example, export_denoiser


def _run(session, model, example):
    got = session.run(None, {n: example[n].numpy() for n in DENOISER_INPUTS})
    with torch.no_grad():
        want = model.denoiser(**example)
    assert all(np.isfinite(g).all() for g in got)  # padding rows see nothing: zeros, not NaN
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))


def test_denoiser_exports_to_onnx_and_matches_torch(kit, tmp_path):
    # weights at the scale of a trained model (outputs of order 1), every gate open
    model = kit.debug_model(std=0.08)
    batch = model.prepare_batch([kit.two_shot_clip()])
    with torch.no_grad():
        example = denoiser_example(batch, model.encode_text(batch), torch.tensor([0.4]))
    path = export_denoiser(model.denoiser, example, tmp_path / "denoiser.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == list(DENOISER_INPUTS)  # the masks are graph inputs
    assert [o.name for o in graph.output] == list(DENOISER_OUTPUTS)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert _run(session, model, example) <= 1e-4
    with torch.no_grad():
        assert 0.1 < float(model.denoiser(**example)[0].abs().mean()) < 10

    # Dynamic axes: another batch size, other token and caption lengths, other masks.
    script = kit.two_shot_script()
    short = dict(script, duration=1.125, event=[script["event"][0]], shot=[dict(script["shot"][0], time_range=[0.0, 1.125])])
    video, audio = kit.random_media(9, frames=9, samples=9000)
    clips = [
        ClipInput(kit.caption_of(short), video=video, audio=audio, references={"R1": kit.random_reference(1), "R2": kit.random_reference(2, seconds=None)}),
        kit.two_shot_clip(dict(script, **{"global": {"scene_description": "a big old family house by the sea at dawn"}}), seed=3),
        kit.two_shot_clip(seed=4),
    ]
    batch2 = model.prepare_batch(clips)
    with torch.no_grad():
        example2 = denoiser_example(batch2, model.encode_text(batch2), torch.tensor([0.1, 0.5, 0.9]))
    assert example2["video"].shape[0] == 3 and example2["text"].shape[1] != example["text"].shape[1]
    assert _run(session, model, example2) <= 1e-4
    # the mask input is live: routing off in the mask changes the output
    open_mask = dict(example2, video_text_mask=torch.ones_like(example2["video_text_mask"]))
    a = session.run(None, {n: example2[n].numpy() for n in DENOISER_INPUTS})[0]
    b = session.run(None, {n: open_mask[n].numpy() for n in DENOISER_INPUTS})[0]
    assert np.abs(a - b).max() > 1e-3


def test_data_prediction_head_exports_with_its_velocity_conversion(kit, tmp_path):
    """A data-predicting audio head (the tiny preset's) exports with v = (z_t - x) / max(t, min_t)
    inside the graph, so the served sampler gets velocities, including below min_t."""
    model = kit.debug_model(std=0.08, **{"denoiser.audio_prediction": "data"})
    batch = model.prepare_batch([kit.two_shot_clip()])
    with torch.no_grad():
        example = denoiser_example(batch, model.encode_text(batch), torch.tensor([0.4]))
    session = ort.InferenceSession(str(export_denoiser(model.denoiser, example, tmp_path / "d.onnx")), providers=["CPUExecutionProvider"])
    for t in (0.4, 0.01):
        ex = dict(example, t=torch.tensor([t]))
        got = session.run(None, {n: ex[n].numpy() for n in DENOISER_INPUTS})[1]
        with torch.no_grad():
            want = model.denoiser(**ex)[1].numpy()
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
