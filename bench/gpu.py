"""The checks that need a GPU, in one short script for a device machine.

1. ``nccl``: the ``local`` launch backend on this machine's GPUs (torchrun, one process per
   GPU, NCCL): the debug ``id`` stage for a few steps; reports the backend the ranks used
   (from their log) and samples/s.
2. ``block``: one paper-shaped dual-tower block (width 3072, 24 heads of 128, feed-forward
   10496; ``model/dit.py: DualTowerBlock``) forward + backward under bf16 autocast, video and
   audio tokens and 512 text tokens, no masks; FLOPs counted by torch's FlopCounterMode,
   time from CUDA events (median of ``--repeats``), MFU against ``--peak-tflops`` (dense
   bf16: 989 for H100 / H200 SXM).
3. ``routing``: one attention at the paper head shape with 6 shots: unmasked SDPA (the
   baseline), SDPA with the dense routing mask (what runs today), and FlexAttention with
   the block mask (compiled), each timed with CUDA events; ratios against the baseline.

Without CUDA it says so and writes ``{"cuda": false}``; ``--cpu-smoke`` runs 2 and 3 at
toy sizes on the CPU instead (checks the script itself, measures nothing worth recording).

Usage: .venv/bin/python bench/gpu.py [--repeats 10] [--video-tokens 8192] [--peak-tflops 989]
                                     [--cpu-smoke] [--out bench/results/gpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _timed(fn, repeats: int, cuda: bool) -> float:
    """Median seconds per call after two warm-up calls (compilation, allocator)."""
    for _ in range(2):
        fn()
    out = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            out.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(out)


def nccl_check(steps: int) -> dict:
    from mavin_ops.data import synth
    from mavin_ops.training.launch import StageLaunch, launch

    n = torch.cuda.device_count()
    with tempfile.TemporaryDirectory(prefix="mavin-gpu-") as tmp:
        tmp = Path(tmp)
        synth.generate(tmp / "data", preset="debug", seed=0, progress=False)
        res = launch(StageLaunch("id", "debug", dataset=str(tmp / "data"), out_dir=str(tmp / "id"), nproc=n, steps=steps, track=False,
                                 kind="local"), log_dir=tmp / "ranks", timeout_s=900)
        logs = "".join(p.read_text(errors="replace") for p in (tmp / "ranks").rglob("*.log"))
    backend = "nccl" if ", nccl;" in logs else ("gloo" if ", gloo;" in logs else "unknown")
    return {"processes": n, "backend": backend, "samples_per_s": res.samples_per_s, "final_loss": res.losses[-1]["loss"]}


def block_check(width: int, heads: int, ffn: int, video_tokens: int, audio_tokens: int, text_tokens: int, repeats: int,
                device: torch.device, peak_tflops: float) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from mavin_ops.model.dit import DiTConfig, DualTowerBlock

    cfg = DiTConfig(width=width, heads=heads, ffn_dim=ffn)
    block = DualTowerBlock(cfg).to(device)
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device)

    x, a, text = rnd(1, video_tokens, width), rnd(1, audio_tokens, width), rnd(1, text_tokens, width)
    mod_v, mod_a = rnd(1, 2, 12, width) * 0.02, rnd(1, 2, 12, width) * 0.02
    is_va = torch.zeros(1, video_tokens, dtype=torch.bool, device=device)
    is_aa = torch.zeros(1, audio_tokens, dtype=torch.bool, device=device)
    masks = dict.fromkeys(("video_self", "audio_self", "video_text", "audio_text", "av", "va"))
    ropes = dict.fromkeys(("video", "audio", "video_time", "audio_time"))
    cuda = device.type == "cuda"

    def step():
        block.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            ox, oa = block(x, a, text, mod_v, mod_a, is_va, is_aa, masks, ropes)
            loss = ox.float().square().mean() + oa.float().square().mean()
        loss.backward()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    seconds = _timed(step, repeats, cuda)
    achieved = flops / seconds / 1e12
    return {"width": width, "heads": heads, "ffn_dim": ffn, "video_tokens": video_tokens, "audio_tokens": audio_tokens,
            "text_tokens": text_tokens, "params_m": round(sum(p.numel() for p in block.parameters()) / 1e6, 1),
            "flops_per_step_tflop": round(flops / 1e12, 3), "step_s": seconds, "achieved_tflops": round(achieved, 1),
            "mfu": round(achieved / peak_tflops, 4) if cuda else None, "peak_tflops": peak_tflops}


def routing_check(tokens: int, text_tokens: int, shots: int, heads: int, head_dim: int, repeats: int, device: torch.device) -> dict:
    from mavin_ops.model.dit import _flex, attend
    from mavin_ops.model.masks import GroupMask

    rng = np.random.default_rng(0)
    shot_of = np.sort(rng.integers(0, shots, tokens))  # contiguous shots
    # captions: global (bit 1), one per shot (bits 2..), two roles after them
    cap_of = np.sort(rng.integers(1, 2 + shots + 2, text_tokens))
    roles = {s: [2 + shots + (s % 2)] for s in range(shots)}
    q_text = np.array([(1 << 1) | (1 << (2 + s)) | sum(1 << r for r in roles[s]) for s in shot_of])
    text_gm = GroupMask(torch.tensor(q_text)[None].to(device), torch.tensor(cap_of)[None].to(device))
    self_gm = GroupMask(torch.tensor(1 << (1 + shot_of))[None].to(device), torch.tensor(1 + shot_of)[None].to(device))
    g = torch.Generator(device="cpu").manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def rnd(n):
        return torch.randn(1, heads, n, head_dim, generator=g).to(device, dtype)

    q = rnd(tokens)
    out = {}
    for name, gm, nk in (("self_attention", self_gm, tokens), ("text_attention", text_gm, text_tokens)):
        k, v = rnd(nk), rnd(nk)
        dense, block = gm.dense(), gm.block_mask(block_size=128)
        times = {
            "unmasked_sdpa": _timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), repeats, device.type == "cuda"),
            "routed_dense_sdpa": _timed(lambda: attend(q, k, v, dense), repeats, device.type == "cuda"),
            "routed_flex_block_sparse": _timed(lambda: _flex(q, k, v, block), repeats, device.type == "cuda"),
        }
        base = times["unmasked_sdpa"]
        out[name] = {"shape_B_H_Nq_Nk_hd": [1, heads, tokens, nk, head_dim], "visible_fraction": round(float(dense.float().mean()), 4),
                     **{f"{k}_s": v for k, v in times.items()}, **{f"{k}_ratio": round(v / base, 3) for k, v in times.items() if k != "unmasked_sdpa"}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--video-tokens", type=int, default=8192, help="video tokens of the block (a few seconds of paper latents)")
    ap.add_argument("--audio-tokens", type=int, default=512)
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--shots", type=int, default=6)
    ap.add_argument("--nccl-steps", type=int, default=4)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (989: H100 / H200 SXM)")
    ap.add_argument("--cpu-smoke", action="store_true", help="without CUDA: run the block and routing checks at toy sizes")
    ap.add_argument("--out", type=Path, default=Path("bench/results/gpu.json"))
    a = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    result: dict = {"command": "python bench/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv), "cuda": cuda,
                    "machine": f"{platform.machine()}, torch {torch.__version__}, "
                               + (torch.cuda.get_device_name(0) if cuda else "no GPU")}
    if cuda:
        dev = torch.device("cuda")
        result["nccl"] = nccl_check(a.nccl_steps)
        result["block"] = block_check(3072, 24, 10496, a.video_tokens, a.audio_tokens, a.text_tokens, a.repeats, dev, a.peak_tflops)
        result["routing_6_shots"] = routing_check(a.video_tokens, a.text_tokens, a.shots, 24, 128, a.repeats, dev)
    elif a.cpu_smoke:
        dev = torch.device("cpu")
        result["block"] = block_check(64, 2, 128, 256, 64, 32, 2, dev, a.peak_tflops)
        result["routing_6_shots"] = routing_check(256, 64, a.shots, 2, 32, 2, dev)
        result["note"] = "CPU smoke run at toy sizes: checks the script, measures nothing to record"
    else:
        print("no CUDA device: nothing measured (run this on a GPU machine; --cpu-smoke checks the script here)", file=sys.stderr)
    if cuda or not a.cpu_smoke:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
