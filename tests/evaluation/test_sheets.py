"""Contact sheets: the evaluation draws what it scored (truth next to generated, per shot,
with the waveform and the scripted dialogue), names them in metrics.json, logs them, and the
gate page shows the summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mavin_ops.data import media
from mavin_ops.evaluation import gate as G
from mavin_ops.evaluation.runner import evaluate_dir


def _png(path: Path) -> np.ndarray:
    img = media.read_png(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    return img


def test_evaluation_writes_a_sheet_per_clip_and_a_summary(debug_dataset, tmp_path):
    out = evaluate_dir(debug_dataset, None, tmp_path / "e", sheets=True)
    ids = [c["id"] for c in out["clips"]]
    assert out["sheets"] == {"dir": "sheets", "summary": "sheets/summary.png"}
    sheets = tmp_path / "e" / "sheets"
    assert sorted(p.stem for p in sheets.glob("c*.png")) == sorted(ids)
    summary = _png(sheets / "summary.png")
    # not a blank canvas: the frames drawn in it carry many colours
    assert len(np.unique(summary.reshape(-1, summary.shape[-1]), axis=0)) > 50
    for cid in ids:
        _png(sheets / f"{cid}.png")
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["sheets"]["summary"] == "sheets/summary.png"


def test_sheets_are_drawn_only_when_asked(debug_dataset, tmp_path):
    from mavin_ops.cli import main

    out = evaluate_dir(debug_dataset, None, tmp_path / "e")
    assert "sheets" not in out and not (tmp_path / "e" / "sheets").exists()
    assert main(["evaluate", str(debug_dataset), "--out", str(tmp_path / "cli")]) == 0  # the command draws them
    assert (tmp_path / "cli" / "sheets" / "summary.png").is_file()
    assert main(["evaluate", str(debug_dataset), "--out", str(tmp_path / "off"), "--no-sheets"]) == 0
    assert not (tmp_path / "off" / "sheets").exists()


def test_gate_page_shows_the_summary_sheet_and_ignores_a_name_outside(debug_dataset, tmp_path):
    evaluate_dir(debug_dataset, None, tmp_path / "e", sheets=True)
    G.run_gate(tmp_path / "e" / "metrics.json", None, tmp_path / "g", champion_metrics_path=tmp_path / "e" / "metrics.json")
    page = (tmp_path / "g" / "gate.html").read_text()
    assert "What the model drew" in page and 'src="data:image/png;base64,' in page
    doc = json.loads((tmp_path / "e" / "metrics.json").read_text())
    doc["sheets"]["summary"] = "../../etc/passwd"
    (tmp_path / "e" / "metrics.json").write_text(json.dumps(doc))
    G.run_gate(tmp_path / "e" / "metrics.json", None, tmp_path / "g2", champion_metrics_path=tmp_path / "e" / "metrics.json")
    assert "What the model drew" not in (tmp_path / "g2" / "gate.html").read_text()


def test_the_served_clip_gets_a_contact_sheet_next_to_its_mp4(tmp_path):
    """What `mavin-ops smoke` draws next to smoke.mp4: the served frames per scripted shot and
    the decoded audio track under the scripted dialogue."""
    from mavin_ops.model.config import preset
    from mavin_ops.serving.examples import write_example
    from mavin_ops.serving.smoke import served_sheet

    config = preset("debug")
    script_path = write_example(config, tmp_path / "scene")
    script = json.loads(script_path.read_text())
    vc, ac = config.video_codec, config.audio_codec
    n = int(round(script["duration"] * vc.fps))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (n, vc.height, vc.width, 3), dtype=np.uint8)
    audio = (0.3 * np.sin(np.linspace(0, 400, int(round(script["duration"] * ac.sample_rate))))).astype(np.float32)
    media.write_video(tmp_path / "smoke.mp4", frames, int(vc.fps), audio, ac.sample_rate)
    wave, rate = media.read_video_audio(tmp_path / "smoke.mp4")
    assert rate == ac.sample_rate and abs(len(wave) - len(audio)) <= 2048  # AAC frames pad the end
    sheet = served_sheet(tmp_path / "smoke.png", tmp_path / "smoke.mp4", script_path)
    assert sheet == tmp_path / "smoke.png"
    _png(sheet)
