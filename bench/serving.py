"""Serving: denoiser step latency through Triton vs in-process ONNX Runtime, and throughput
under concurrency with and without dynamic batching.

One run, one machine:

1. a model (``--checkpoint``, else the ``--preset`` with small random weights: the graph and
   its cost do not depend on the weight values) is exported (parity-checked) and built twice,
   with dynamic batching and without (same ONNX files, one instance, max batch 16); both
   tritonservers run side by side;
2. latency of one denoiser step on the inputs of one example clip (batch 1, guidance off):
   ``inprocess`` (an ONNX Runtime session in this process: the baseline) and through each
   server (HTTP, tritonclient; the ``python`` variant, ONNX Runtime inside a Python-backend
   model, the only backend the tritonserver here has); p50/p99 and ratios to the baseline;
3. throughput: ``C`` client threads (1, 4, 16) each send the step back to back; requests/s
   with and without dynamic batching, as ratios to the in-process single-stream rate.

Every measurement is split into ``--rounds`` rounds interleaved across the paths, so a
change of machine load during the run hits all of them alike.

Prints one JSON object and writes it to ``--out``.

    .venv/bin/python bench/serving.py --preset tiny --out bench/results/serving.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "n": 0}
    arr = np.asarray(samples) * 1000.0
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3), "p99_ms": round(float(np.percentile(arr, 99)), 3), "n": len(samples)}


def _model(args):
    import torch

    from mavin_ops.model import build_model, save_checkpoint

    if args.checkpoint:
        return args.checkpoint
    model = build_model(args.preset)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in list(model.denoiser.parameters()) + list(model.text_encoder.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    path = Path(args.work) / f"{args.preset}.safetensors"
    save_checkpoint(model, path)
    return path


def _step_inputs(export_dir: Path) -> dict[str, np.ndarray]:
    """Denoiser inputs of one example clip at t = 0.5 (what one sampling step sends)."""
    import torch

    from mavin_ops.serving.examples import example_references, example_script
    from mavin_ops.serving.pipeline import GenerateRequest, OrtRunner, Pipeline, local_pipeline

    pipe: Pipeline = local_pipeline(export_dir)
    script = example_script(pipe.config)
    batch = pipe.prepare(GenerateRequest(script, example_references(pipe.config, script)))
    text = pipe.encode_text(batch)
    inputs = batch.denoiser_inputs(batch.video, batch.audio, text, torch.full((1,), 0.5))
    out = {}
    for k, v in inputs.items():
        arr = v.numpy()
        out[k] = arr.astype(np.int64) if arr.dtype == np.int64 else arr
    assert isinstance(pipe.run, OrtRunner)
    return out


def _inprocess_session(export_dir: Path, threads: int):
    from mavin_ops.serving.pipeline import OrtRunner

    return OrtRunner({"denoiser": export_dir / "denoiser.onnx"}, threads=threads)


def _time_inprocess(runner, inputs: dict[str, np.ndarray], iters: int) -> list[float]:
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        runner("denoiser", inputs, ["video_velocity", "audio_velocity"])
        samples.append(time.perf_counter() - t0)
    return samples


def _client_inputs(mod, inputs: dict[str, np.ndarray]):
    items = []
    for name, arr in inputs.items():
        if name == "t":
            arr = arr.reshape(-1, 1)  # the wire shape: [B, 1]
        item = mod.InferInput(name, list(arr.shape), mod.np_to_triton_dtype(arr.dtype))
        item.set_data_from_numpy(arr)
        items.append(item)
    return items


def _time_triton(client, items, iters: int) -> list[float]:
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        client.infer("denoiser", items)
        samples.append(time.perf_counter() - t0)
    return samples


def _throughput(url: str, inputs: dict[str, np.ndarray], concurrency: int, seconds: float) -> dict[str, float]:
    import tritonclient.http as th

    counts = [0] * concurrency
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        client = th.InferenceServerClient(url)
        items = _client_inputs(th, inputs)
        try:
            client.infer("denoiser", items)  # connection warm
            start.wait()
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                client.infer("denoiser", items)
                latencies[i].append(time.perf_counter() - t0)
                counts[i] += 1
        except Exception as exc:  # reported in the results, never silently dropped
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 1e9
    start.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    flat = [x for lat in latencies for x in lat]
    out = {"requests": sum(counts), "wall_s": round(wall, 2), "req_per_s": round(sum(counts) / wall, 2), **_percentiles(flat)}
    if errors:
        out["errors"] = errors[:3]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", help="model preset when no --checkpoint (default: tiny)")
    parser.add_argument("--checkpoint", default="", help="a trained checkpoint (file or training checkpoint folder)")
    parser.add_argument("--iters", type=int, default=200, help="latency samples per path (default: 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per throughput point (default: 10)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads, both paths (default: 1)")
    parser.add_argument("--queue-delay-us", type=int, default=None, help="dynamic batcher max queue delay (default: the repository default)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per measurement (default: 4)")
    parser.add_argument("--out", default="bench/results/serving.json")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from mavin_ops.serving.export import export_model
    from mavin_ops.serving.repository import build_repository
    from mavin_ops.serving.server import serve

    import tritonclient.http as th

    with tempfile.TemporaryDirectory(prefix="mavin-bench-serving-") as work:
        args.work = work
        ckpt = _model(args)
        t0 = time.time()
        exported = export_model(ckpt, Path(work) / "onnx")
        export_s = time.time() - t0
        inputs = _step_inputs(exported.path)
        shapes = {k: list(v.shape) for k, v in inputs.items() if k in ("video", "audio", "text")}
        results: dict = {
            "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}, no GPU",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "command": "python bench/serving.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "model": str(args.checkpoint or f"{args.preset} (random weights)"),
            "step_shapes": shapes,
            "rounds": args.rounds,
            "max_queue_delay_us": args.queue_delay_us if args.queue_delay_us is not None else 0,
            "export_s": round(export_s, 1),
            "parity_max_abs_diff": exported.parity,
        }
        labels = {"dynamic_batching": True, "no_batching": False}
        servers = {}
        try:
            for label, batching in labels.items():
                opts = {} if args.queue_delay_us is None else {"max_queue_delay_us": args.queue_delay_us}
                built = build_repository(exported.path, Path(work) / f"repo-{label}", variants=("python",), dynamic_batching=batching, max_batch_size=16, ort_threads=args.threads, **opts)
                servers[label] = serve(built.path, variant="python", exit_timeout_s=3)
            # 1. latency: in-process and through Triton, interleaved in rounds so load drifts hit both
            runner = _inprocess_session(exported.path, args.threads)
            clients = {label: th.InferenceServerClient(srv.http_url) for label, srv in servers.items()}
            items = _client_inputs(th, inputs)
            for _ in range(5):
                runner("denoiser", inputs, ["video_velocity", "audio_velocity"])
                for c in clients.values():
                    c.infer("denoiser", items)
            lat: dict[str, list[float]] = {"inprocess": [], **{label: [] for label in servers}}
            per = max(1, args.iters // args.rounds)
            for _ in range(args.rounds):
                lat["inprocess"] += _time_inprocess(runner, inputs, per)
                for label, c in clients.items():
                    lat[label] += _time_triton(c, items, per)
            for c in clients.values():
                c.close()
            base = _percentiles(lat["inprocess"])
            results["latency"] = {k: _percentiles(v) for k, v in lat.items()}
            results["latency_ratio_over_inprocess"] = {
                label: {"p50": round(results["latency"][label]["p50_ms"] / base["p50_ms"], 2), "p99": round(results["latency"][label]["p99_ms"] / base["p99_ms"], 2)}
                for label in servers
            }
            # 2. throughput at each concurrency, the two configurations interleaved in rounds
            base_rps = 1000.0 / base["p50_ms"]
            results["inprocess_single_stream_req_per_s"] = round(base_rps, 2)
            tput: dict = {label: {} for label in servers}
            for conc in args.concurrency:
                acc = {label: {"requests": 0, "wall_s": 0.0, "lat": []} for label in servers}
                for _ in range(args.rounds):
                    for label, srv in servers.items():
                        r = _throughput(srv.http_url, inputs, conc, args.seconds / args.rounds)
                        acc[label]["requests"] += r["requests"]
                        acc[label]["wall_s"] += r["wall_s"]
                        acc[label]["lat"].append(r)
                        if "errors" in r:
                            acc[label]["errors"] = r["errors"]
                for label, a in acc.items():
                    rps = a["requests"] / a["wall_s"]
                    tput[label][str(conc)] = {
                        "requests": a["requests"],
                        "req_per_s": round(rps, 2),
                        "ratio_to_inprocess_single_stream": round(rps / base_rps, 2),
                        "p50_ms_per_round": [x["p50_ms"] for x in a["lat"]],
                        **({"errors": a["errors"]} if "errors" in a else {}),
                    }
            results["throughput"] = tput
            results["dynamic_over_no_batching"] = {
                str(c): round(tput["dynamic_batching"][str(c)]["req_per_s"] / tput["no_batching"][str(c)]["req_per_s"], 2) for c in args.concurrency
            }
            results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            for srv in servers.values():
                srv.stop()
    text = json.dumps(results, indent=1)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
