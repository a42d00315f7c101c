"""The data path: precompute once per (dataset digest, encoder), the Dataset, the schedule."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from mavin_ops.training import data as tdata


class CountingAdapter:
    """Wraps an adapter and counts encode_clip calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.name, self.preset = inner.name, inner.preset

    def encoder_fingerprint(self):
        return self.inner.encoder_fingerprint()

    def encode_clip(self, clip):
        self.calls += 1
        return self.inner.encode_clip(clip)


def _train_rows(root):
    return [json.loads(line) for line in open(root / "manifest.jsonl") if json.loads(line)["split"] == "train"]


def test_precompute_encodes_each_training_clip_once_keyed_by_digest(debug_dataset, toy, tmp_path):
    ad = CountingAdapter(toy)
    idx = tdata.precompute(debug_dataset, ad, tmp_path / "lat")
    rows = _train_rows(debug_dataset)
    assert ad.calls == len(rows) == len(idx) == 4
    assert [c["id"] for c in idx.clips] == [r["id"] for r in rows]
    assert idx.dataset_digest == tdata.dataset_digest(debug_dataset)
    for c, r in zip(idx.clips, rows):
        script = r["script"]
        assert c["num_frames"] == r["num_frames"] and c["n_shots"] == len(script["shot"])
        custom = any(e.get("reference_image") or e.get("reference_audio") for e in script["reference"])
        assert ("identity" in c["subsets"]) == custom
        assert ("multishot" in c["subsets"]) == (len(script["shot"]) >= 2)
        assert ("dialogue" in c["subsets"]) == any(e["type"] == "dialogue" for e in script["event"])
    # same data, same encoder: nothing is encoded again
    again = tdata.precompute(debug_dataset, ad, tmp_path / "lat")
    assert ad.calls == 4 and again.clips == idx.clips
    # an interrupted run (no index yet) keeps the clip files already written
    (tmp_path / "lat" / "index.json").unlink()
    tdata.precompute(debug_dataset, ad, tmp_path / "lat")
    assert ad.calls == 4
    # the version's DVC digest is recorded, the content (manifest sha256) stays the key
    tdata.precompute(debug_dataset, ad, tmp_path / "lat", digest="0123abcd.dir")
    assert ad.calls == 4
    # changed data never reuses them
    manifest = debug_dataset / "manifest.jsonl"
    other = tmp_path / "other"
    shutil.copytree(debug_dataset, other)
    lines = manifest.read_text().splitlines()
    (other / "manifest.jsonl").write_text("\n".join(lines[1:]) + "\n")  # one clip fewer: new content
    changed = tdata.precompute(other, ad, tmp_path / "lat")
    assert ad.calls == 4 + 3 and len(changed) == 3 and changed.manifest_digest != idx.manifest_digest


def test_default_cache_folder_is_keyed_by_content_and_encoder(debug_dataset, toy):
    idx = tdata.precompute(debug_dataset, toy, digest="feedbeef0123.dir")
    content = tdata.dataset_digest(debug_dataset).removeprefix("sha256:")
    assert idx.root.name == content[:16] + "-" + toy.encoder_fingerprint()[:12]
    assert idx.dataset_digest == "feedbeef0123.dir" and idx.manifest_digest == "sha256:" + content


def test_dataset_reads_safetensors_and_refuses_a_changed_file(debug_dataset, toy, tmp_path):
    idx = tdata.precompute(debug_dataset, toy, tmp_path / "lat")
    ds = tdata.LatentDataset(idx)
    rec = ds[1]
    assert rec.id == idx.clips[1]["id"] and rec.tensors["video"].dtype == torch.float32
    assert rec.meta["num_frames"] == idx.clips[1]["num_frames"]
    f = idx.root / idx.clips[2]["file"]
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(tdata.DataError, match=f"{f} does not match its sha256"):
        tdata.LatentDataset(idx)[2]


def _fake_index(tmp_path, n=24):
    rng = np.random.default_rng(0)
    clips = []
    for i in range(n):
        frames, shots = int(rng.choice([17, 21, 25])), int(rng.integers(1, 4))
        subsets = ["all"] + (["identity"] if i % 3 == 0 else []) + (["multishot"] if shots >= 2 else []) + (["dialogue"] if i % 2 else [])
        clips.append({"id": f"c{i:03d}", "file": "", "sha256": "", "num_frames": frames, "n_shots": shots, "subsets": subsets})
    return tdata.LatentIndex(tmp_path, "d", "e", "toy", "train", tuple(clips))


def test_batches_never_mix_buckets_and_every_epoch_covers_each_clip_once(tmp_path):
    idx = _fake_index(tmp_path)
    sched = tdata.BatchSchedule(idx, (("all", 1.0),), batch=4, seed=3)
    step = 0
    for epoch in range(2):
        seen: list[int] = []
        while len(seen) < len(idx):
            b = sched.batch(step)
            step += 1
            keys = {(idx.clips[i]["num_frames"], idx.clips[i]["n_shots"]) for i in b}
            assert len(keys) == 1 and 1 <= len(b) <= 4
            seen.extend(b)
        assert sorted(seen) == list(range(len(idx))), f"epoch {epoch}"


def test_schedule_is_a_pure_function_of_seed_step_and_rank(tmp_path):
    idx = _fake_index(tmp_path)
    mix = (("identity", 1.0), ("multishot", 1.0), ("dialogue", 1.0))
    a = tdata.BatchSchedule(idx, mix, 2, seed=0, world_size=2)
    b = tdata.BatchSchedule(idx, mix, 2, seed=0, world_size=2)
    late = b.batch(9, 1)  # asked first, out of order: what a resumed run does
    assert [a.batch(s, r) for s in range(10) for r in range(2)][-1] == late
    assert [a.batch(s, 0) for s in range(10)] == [b.batch(s, 0) for s in range(10)]
    c = tdata.BatchSchedule(idx, mix, 2, seed=1, world_size=2)
    assert [a.batch(s, 0) for s in range(10)] != [c.batch(s, 0) for s in range(10)]


def test_joint_mixture_interleaves_subsets_by_weight(tmp_path):
    idx = _fake_index(tmp_path)
    even = tdata.BatchSchedule(idx, (("identity", 1.0), ("multishot", 1.0), ("dialogue", 1.0)), 2, seed=0)
    assert [even.subset_of(s) for s in range(6)] == ["identity", "multishot", "dialogue"] * 2
    for s in range(30):
        members = {i for i, c in enumerate(idx.clips) if even.subset_of(s) in c["subsets"]}
        assert set(even.batch(s)) <= members
    skew = tdata.BatchSchedule(idx, (("identity", 2.0), ("dialogue", 1.0)), 2, seed=0)
    counts = Counter(skew.subset_of(s) for s in range(300))
    assert counts == {"identity": 200, "dialogue": 100}


def test_an_empty_subset_is_a_clear_error(tmp_path):
    idx = _fake_index(tmp_path)
    empty = tdata.LatentIndex(tmp_path, "d", "e", "toy", "train", tuple(c for c in idx.clips if "identity" not in c["subsets"]))
    with pytest.raises(tdata.DataError, match="no training clip .* belongs to subset 'identity'"):
        tdata.BatchSchedule(empty, (("identity", 1.0),), 2, seed=0)


def test_real_adapter_batches_from_latents_equal_batches_from_media(debug_dataset, tmp_path):
    """Precomputed latents + collate give the same Batch as the model encoding the media."""
    from mavin_ops import mtss
    from mavin_ops.data import media
    from mavin_ops.model import ClipInput, RoleReference, build_model
    from mavin_ops.training.mavin_adapter import MavinAdapter

    ad = MavinAdapter("debug")
    idx = tdata.precompute(debug_dataset, ad, tmp_path / "lat")
    ds = tdata.LatentDataset(idx)
    from_latents = ad.collate([ds[0], ds[2]])
    model = build_model("debug")
    rows = {r["id"]: r for r in _train_rows(debug_dataset)}
    clips = []
    for i in (0, 2):
        c = media.load_clip(debug_dataset, rows[idx.clips[i]["id"]])
        refs = {rid: RoleReference(image=c.ref_images.get(rid), audio=c.ref_audio.get(rid)) for rid in set(c.ref_images) | set(c.ref_audio)}
        clips.append(ClipInput(caption=mtss.compile_caption(c.script), video=c.frames, audio=c.waveform, references=refs))
    from_media = model.prepare_batch(clips)
    for name in ("video", "audio", "video_pos", "audio_pos", "video_role", "text_ids", "text_segment", "video_loss_mask"):
        assert torch.equal(getattr(from_latents, name), getattr(from_media, name)), name
    for name, m in from_media.dense_masks().items():
        assert torch.equal(from_latents.dense_masks()[name], m), name
