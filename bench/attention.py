"""Routed attention cost vs unmasked SDPA, and the tiny denoiser's step time.

Measures, in one run (so ratios compare like with like):

1. tiny shape: the hierarchical text attention (``video_text``) and the video self-attention
   (``video_self``) of a typical tiny clip batch, core attention only:
   unmasked SDPA (baseline) vs SDPA with the dense routing mask vs FlexAttention (eager on CPU).
2. paper-sized block shape: one attention at width 3072 / 24 heads (head 128) with a short but
   realistic sequence (3 shots, 2 roles): text attention of 2048 video tokens over 512
   caption tokens, and shot-scoped self-attention of 2048 tokens; same variants.
3. the tiny denoiser: forward and forward+backward time per training step at batch 1 and 8,
   with dense masks, against the same step with no masks at all (baseline).

Times are median process CPU seconds (both threads), ratios against the baseline of the same
run. Usage: .venv/bin/python bench/attention.py [--repeats 5] [--threads 2] [--flex] [--out results/attention.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mavin_ops.mtss import compile_caption, parse_script
from mavin_ops.model import ClipInput, RoleReference, build_model
from mavin_ops.model.dit import _flex
from mavin_ops.model.masks import GroupMask


def _compare(fns: dict, repeats: int) -> dict[str, float]:
    """Median process CPU seconds per call of each function, measured interleaved (round r
    calls every function once, in a rotated order) after one warm-up call each, so a change in
    machine load hits every variant alike. The first entry is the baseline."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.process_time()
            fns[n]()
            times[n].append(time.process_time() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def _with_ratios(times: dict[str, float]) -> dict:
    base = next(iter(times))
    out = {f"{n}_cpu_s": round(t, 5) for n, t in times.items()}
    out.update({f"{n}_ratio": round(t / times[base], 3) for n, t in times.items() if n != base})
    return out


def tiny_script(num_frames: int = 25, fps: float = 8.0) -> dict:
    """A typical tiny clip: 3 shots, 3 roles (2 customized), two dialogue lines."""
    T = num_frames / fps
    cut1, cut2 = 1.0, 2.0

    def person(i, custom):
        e = {
            "id": f"R{i}",
            "category": "person",
            "semantic_description": f"person number {i} with a round head and short legs",
            "appearance_anchor": {"detail_description": "striped shirt, dark trousers", "hairstyle": "short brown hair"},
            "voice": "a warm low voice with a soft reedy timbre",
        }
        if custom:
            e["reference_image"], e["reference_audio"] = f"refs/r{i}.png", f"refs/r{i}.wav"
        return e

    return {
        "clip_id": "bench-tiny",
        "duration": T,
        "reference": [person(1, True), person(2, True), person(3, False)],
        "shot": [
            {"id": "S1", "time_range": [0.0, cut1], "visual_description": "two people stand in front of a blue wall with dots", "camera": "wide", "references_in_shot": ["R1", "R2"], "active_events": ["E1"]},
            {"id": "S2", "time_range": [cut1, cut2], "visual_description": "close up of the first person talking", "camera": "close-up", "references_in_shot": ["R1"], "active_events": []},
            {"id": "S3", "time_range": [cut2, T], "visual_description": "the third person by a green wall with stripes", "camera": "medium", "references_in_shot": ["R3"], "active_events": ["E2"]},
        ],
        "event": [
            {"id": "E1", "type": "dialogue", "time_range": [0.2, 0.9], "speaker": "R1", "line": "ba do ki"},
            {"id": "E2", "type": "dialogue", "time_range": [2.2, 2.9], "speaker": "R3", "line": "mo ra"},
        ],
        "global": {"scene_description": "three friends meet in a small town", "global_style": "flat colours", "global_audio": "a low ambient hum"},
    }


def tiny_clip(seed: int) -> ClipInput:
    rng = np.random.default_rng(seed)
    script = tiny_script()
    n = int(round(script["duration"] * 8000))
    refs = {r: RoleReference(image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), audio=(0.1 * rng.standard_normal(8000)).astype(np.float32)) for r in ("R1", "R2")}
    return ClipInput(
        compile_caption(parse_script(script)),
        video=rng.integers(0, 256, (25, 32, 32, 3), dtype=np.uint8),
        audio=(0.1 * rng.standard_normal(n)).astype(np.float32),
        references=refs,
    )


def attention_variants(q, k, v, gm: GroupMask, repeats: int, flex: bool) -> dict:
    """Core attention: unmasked SDPA (baseline), SDPA with the dense routing mask (our
    ``attend``: the mask plus the empty-row guard), and optionally eager FlexAttention."""
    from mavin_ops.model.dit import attend

    dense = gm.dense()
    fns = {
        "unmasked_sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v),
        "routed_dense_sdpa": lambda: attend(q, k, v, dense),
        "dense_mask_build": gm.dense,
    }
    if flex:
        bm = gm.block_mask(block_size=128)
        fns["flex_eager"] = lambda: _flex(q, k, v, bm)
    return {"visible_fraction": round(float(dense.float().mean()), 4), **_with_ratios(_compare(fns, repeats))}


def paper_groups(n_video: int, n_text: int, seed: int = 0) -> tuple[GroupMask, GroupMask]:
    """Routing and self-attention groups for a 3-shot, 2-role clip of ``n_video`` tokens."""
    rng = np.random.default_rng(seed)
    shots = np.sort(rng.integers(0, 3, n_video))  # contiguous shot partition
    caps = np.sort(rng.integers(1, 8, n_text))  # 7 captions: g, s1..s3, r1v, r2v, r1a
    # video token in shot i sees g (1), shot caption (2+i) and the roles present in it
    present = {0: [5, 6], 1: [5], 2: [6]}
    q_text = np.array([sum(1 << c for c in [1, 2 + i] + present[i]) for i in shots])
    q_self = np.array([1 << (1 + i) for i in shots])  # shot scope: the literal reading of identity mask (i)
    text = GroupMask(torch.tensor(q_text)[None], torch.tensor(caps)[None])
    self_ = GroupMask(torch.tensor(q_self)[None], torch.tensor(1 + shots)[None])
    return text, self_


def denoiser_steps(model, batch, repeats: int) -> dict:
    """One training step's forward (no grad) and forward + backward, with no masks at all
    (baseline: every token sees everything, padding included) and with the dense masks."""
    routed = model.training_inputs(batch, torch.Generator().manual_seed(0))
    unmasked = dict(routed, **{k: None for k in batch.dense_masks()})

    def fwd(inputs):
        with torch.no_grad():
            model(**inputs)

    def fwd_bwd(inputs):
        model.zero_grad(set_to_none=True)
        model(**inputs)["loss"].backward()

    return {
        "forward": _with_ratios(_compare({"unmasked": lambda: fwd(unmasked), "routed": lambda: fwd(routed)}, repeats)),
        "forward_backward": _with_ratios(_compare({"unmasked": lambda: fwd_bwd(unmasked), "routed": lambda: fwd_bwd(routed)}, repeats)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flex", action="store_true", help="also time eager FlexAttention (slow on CPU: it materialises scores)")
    ap.add_argument("--paper-tokens", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict = {
        "machine": f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}, cuda={torch.cuda.is_available()}",
        "command": "python bench/attention.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }

    # 1. tiny shapes, from a real batch
    model = build_model("tiny").eval()
    cfg = model.config.denoiser
    batch = model.prepare_batch([tiny_clip(s) for s in range(8)])
    meta = batch.clips[0]
    results["tiny_clip_tokens"] = {
        "frames": meta.num_frames,
        "video_latent": meta.video_tokens,
        "video_anchors": sum(meta.layout.video_anchors),
        "audio_latent": meta.audio_tokens,
        "audio_anchors": sum(meta.layout.audio_anchors),
        "text": meta.text_tokens,
    }
    hd = cfg.width // cfg.heads
    B, Nv, L = batch.video.shape[0], batch.video.shape[1], batch.text_ids.shape[1]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, cfg.heads, Nv, hd, generator=g)
    kt, vt = torch.randn(B, cfg.heads, L, hd, generator=g), torch.randn(B, cfg.heads, L, hd, generator=g)
    ks, vs = torch.randn(B, cfg.heads, Nv, hd, generator=g), torch.randn(B, cfg.heads, Nv, hd, generator=g)
    results["tiny_video_text"] = {"shape_B_H_Nq_Nk_hd": [B, cfg.heads, Nv, L, hd], **attention_variants(q, kt, vt, batch.masks["video_text"], args.repeats, args.flex)}
    results["tiny_video_self"] = {"shape_B_H_Nq_Nk_hd": [B, cfg.heads, Nv, Nv, hd], **attention_variants(q, ks, vs, batch.masks["video_self"], args.repeats, args.flex)}

    # 2. one paper-sized attention (width 3072, 24 heads of 128)
    N, Lp, H, D = args.paper_tokens, 512, 24, 128
    text_gm, self_gm = paper_groups(N, Lp)
    qp = torch.randn(1, H, N, D, generator=g)
    results["paper_text_attention"] = {
        "shape_B_H_Nq_Nk_hd": [1, H, N, Lp, D],
        **attention_variants(qp, torch.randn(1, H, Lp, D, generator=g), torch.randn(1, H, Lp, D, generator=g), text_gm, max(2, args.repeats // 2), args.flex),
    }
    results["paper_self_attention"] = {
        "shape_B_H_Nq_Nk_hd": [1, H, N, N, D],
        **attention_variants(qp, torch.randn(1, H, N, D, generator=g), torch.randn(1, H, N, D, generator=g), self_gm, max(2, args.repeats // 2), False),
    }

    # 3. tiny denoiser step (text encoder + both towers + loss), dense masks vs no masks
    model.train()
    results["tiny_denoiser_step"] = {}
    for bsz in (1, 8):
        b = model.prepare_batch([tiny_clip(s) for s in range(bsz)])
        results["tiny_denoiser_step"][f"batch_{bsz}"] = {"video_tokens": b.video.shape[1], "audio_tokens": b.audio.shape[1], "text_tokens": b.text_ids.shape[1], **denoiser_steps(model, b, args.repeats)}
    results["parameters"] = {name: build_model(name, device="meta" if name == "paper" else None).parameter_counts() for name in ("debug", "tiny", "paper")}

    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
