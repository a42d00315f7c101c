"""Serving smoke test: fetch a published version, serve it, generate, check, stop.

What it proves about a published version: every file arrives intact (sha256), the real
``tritonserver`` loads every model, one scene script comes back as frames and a waveform of
the scripted length and frame size, the mp4 written from them reads back, a bad script is
refused with a 4xx-class error, and the server still answers afterwards.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["SmokeResult", "fetch_repository", "smoke_test"]


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    version: int
    variant: str
    frames: int
    height: int
    width: int
    audio_samples: int
    refused_status: str
    seconds: float
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def fetch_repository(store: str | Path, workdir: str | Path, *, name: str = "mavin", version: int, endpoint_url: str | None = None) -> Path:
    """The smoke test's fetch step: version ``version`` of ``name`` into
    ``<workdir>/repository-<version>``, every file sha256-checked. A folder left there by an
    earlier smoke test (``make release`` run again without a new version) is replaced by the
    fresh verified copy in one atomic swap, never reused unchecked."""
    from .repository import read_repository
    from .store import fetch

    repo = fetch(store, Path(workdir) / f"repository-{int(version)}", name=name, version=version, endpoint_url=endpoint_url, replace=True)
    read_repository(repo, verify=True)
    return repo


def served_sheet(out: Path, mp4: Path, script_path: Path) -> Path:
    """The contact sheet of a served clip (evaluation/sheets.py), next to its mp4: the frames
    of each scripted shot and the waveform under the scripted dialogue, with the reference
    images the script cites. A served clip has no ground truth to draw beside it."""
    from mavin_ops import mtss
    from mavin_ops.data import media
    from mavin_ops.evaluation.sheets import clip_sheet

    data = json.loads(Path(script_path).read_text(encoding="utf-8"))
    script = mtss.parse_script(data)
    frames, fps = media.read_video(mp4)
    wave, rate = media.read_video_audio(mp4)
    from mavin_ops.data.manifest import resolve_media

    refs = {
        ent.id: media.read_png(resolve_media(Path(script_path).parent, ent.reference_image))
        for ent in script.customized_roles()
        if ent.reference_image is not None
    }
    return clip_sheet(out, clip_id=script.clip_id, script=script, truth=None, generated=frames, fps=float(fps),
                      truth_audio=None, generated_audio=wave, sample_rate=rate, ref_images=refs)


def smoke_test(
    store: str | Path,
    *,
    name: str = "mavin",
    version: int | None = None,
    endpoint_url: str | None = None,
    variant: str | None = None,
    protocol: str = "http",
    steps: int = 2,
    workdir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> SmokeResult:
    """Run the smoke test on ``version`` (default: the newest complete one). Raises
    ``AssertionError`` naming the failed check; returns the result otherwise."""
    from mavin_ops.data.media import read_video
    from mavin_ops.model.config import ModelConfig

    from . import client as cl
    from .examples import example_script, write_example
    from .pipeline import GenerateRequest
    from .repository import read_repository
    from .server import serve
    from .store import list_versions

    say = log or (lambda _m: None)
    start = time.time()
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="mavin-smoke-")) if own else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        if version is None:
            have = list_versions(store, name=name, endpoint_url=endpoint_url)
            if not have:
                raise AssertionError(f"smoke test: {store}/{name} has no complete version to test")
            version = have[-1]
        repo = fetch_repository(store, work, name=name, version=version, endpoint_url=endpoint_url)
        info = read_repository(repo)
        config = ModelConfig.from_dict(info["config"])
        say(f"fetched {store}/{name}/{version} into {repo} (files verified)")
        script_path = write_example(config, work / "scene")
        script = json.loads(script_path.read_text(encoding="utf-8"))
        with serve(repo, variant=variant) as server:
            say(f"tritonserver ready ({server.variant}) at {server.url(protocol)}")
            out = cl.generate(script_path, work / "smoke.mp4", url=server.url(protocol), protocol=protocol, steps=steps, seed=0)
            vc, ac = config.video_codec, config.audio_codec
            want_frames = int(round(script["duration"] * vc.fps))
            want_samples = int(round(script["duration"] * ac.sample_rate))
            if (out.num_frames, out.height, out.width) != (want_frames, vc.height, vc.width):
                raise AssertionError(f"smoke test: got {out.num_frames} frames of {out.height}x{out.width}, the script asks for {want_frames} of {vc.height}x{vc.width}")
            if out.audio_samples != want_samples or out.sample_rate != ac.sample_rate:
                raise AssertionError(f"smoke test: got {out.audio_samples} audio samples at {out.sample_rate} Hz, expected {want_samples} at {ac.sample_rate} Hz")
            frames, fps = read_video(out.path)
            if frames.shape[0] != want_frames or not np.isclose(float(fps), vc.fps):
                raise AssertionError(f"smoke test: {out.path} reads back as {frames.shape[0]} frames at {fps} fps")
            sheet = served_sheet(work / "smoke.png", out.path, script_path)
            say(f"contact sheet of the served clip: {sheet}")
            # a script citing an undeclared entity must be refused by the server (4xx), not crash it
            bad = example_script(config, clip_id="smoke-bad")
            bad["shot"][0]["references_in_shot"].append("R9")
            refused = ""
            conn = cl.connect(server.url(protocol), protocol)
            try:
                try:
                    cl.infer(GenerateRequest(bad, {}, steps=1), conn, protocol)
                except cl.RequestRefused as exc:
                    refused = exc.status
                if not refused:
                    raise AssertionError("smoke test: the server accepted a script citing an undeclared entity")
                again = cl.infer(cl.build_request(script_path, steps=1), conn, protocol)
                if again.frames.shape[0] != want_frames:
                    raise AssertionError("smoke test: the server did not answer a valid request after refusing a bad one")
            finally:
                conn.close()
            variant_used = server.variant
        result = SmokeResult(True, int(version), variant_used, out.num_frames, out.height, out.width, out.audio_samples, refused, time.time() - start, f"{store}/{name}/{version}")
        say(f"smoke test passed: {out.num_frames} frames {out.height}x{out.width}, {out.audio_samples} samples; bad script refused ({refused})")
        return result
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
