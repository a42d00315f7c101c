"""``python -m mavin_ops.training``: the entry point torchrun, DVC and cluster jobs run.

    python -m mavin_ops.training train --stage id --preset tiny --dataset D --out O/id
    torchrun --nproc-per-node 2 -m mavin_ops.training train --stage id --preset debug ...
    python -m mavin_ops.training precompute --dataset D --preset tiny --out L
    python -m mavin_ops.training render-job --stage joint --nodes 4 --gpus 8 --kind trainjob
    python -m mavin_ops.training golden [--write]

``train`` exits 143 after SIGTERM (a checkpoint was written; run it again to resume).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mavin_ops.training", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train one stage (or all four) of the recipe")
    t.add_argument("--stage", required=True, help="id | multishot | av | joint | all")
    t.add_argument("--preset", default="tiny", help="debug | tiny | paper")
    t.add_argument("--dataset", required=True, help="dataset version directory (manifest.jsonl + media)")
    t.add_argument("--out", required=True, help="checkpoint folder of the stage (with --stage all: the root holding one folder per stage)")
    t.add_argument("--init", default=None, help="previous stage's checkpoint (a stage folder or a step-* folder)")
    t.add_argument("--dataset-digest", default="", help="DVC digest of the dataset version (default: sha256 of its manifest)")
    t.add_argument("--dataset-name", default="mavinset-mini")
    t.add_argument("--latents", default=None, help="precomputed latents folder (default: under MAVIN_HOME, keyed by digest)")
    t.add_argument("--release-id", default="")
    t.add_argument("--kfp-run-id", default="")
    t.add_argument("--steps", type=int, default=None, help="override the recipe's step count")
    t.add_argument("--zero-stage", type=int, default=None, help="override the recipe's ZeRO stage (0, 1, 2)")
    t.add_argument("--accum", type=int, default=None, help="override the recipe's micro-batches per optimizer step on each process")
    t.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    t.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto")

    c = sub.add_parser("precompute", help="encode a dataset's training clips into latents once (a DVC stage)")
    c.add_argument("--dataset", required=True)
    c.add_argument("--preset", default="tiny", help="model preset whose encoders are used")
    c.add_argument("--out", default=None, help="output folder (default: under MAVIN_HOME, keyed by digest)")
    c.add_argument("--digest", default=None, help="dataset digest (default: sha256 of its manifest)")

    r = sub.add_parser("render-job", help="print a Kubeflow job for one stage as YAML")
    r.add_argument("--stage", required=True)
    r.add_argument("--preset", default="paper")
    r.add_argument("--nodes", type=int, default=1)
    r.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    r.add_argument("--kind", choices=("trainjob", "pytorchjob"), default="trainjob")
    r.add_argument("--image", default=None)
    r.add_argument("--dataset", default="/mnt/mavin/datasets/mavinset")
    r.add_argument("--out-root", default="/mnt/mavin/checkpoints")
    r.add_argument("--release-id", default="")

    g = sub.add_parser("golden", help="compare the debug recipe's losses with the committed golden file")
    g.add_argument("--write", action="store_true", help="regenerate training/golden/debug_losses.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .data import DataError
    from .recipes import RecipeError
    from .trainer import TrainError

    try:
        return _run(args)
    except (CheckpointError, DataError, RecipeError, TrainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "train":
        from .recipes import STAGES
        from .trainer import train_stage, train_stages

        kwargs = dict(
            dataset_digest=args.dataset_digest,
            dataset_name=args.dataset_name,
            latents_dir=args.latents,
            overrides={"steps": args.steps, "zero_stage": args.zero_stage, "accum": args.accum},
            release_id=args.release_id,
            kfp_run_id=args.kfp_run_id,
            track=not args.no_track,
            progress={"auto": None, "bar": True, "lines": False}[args.progress],
        )
        if args.stage == "all":
            results = train_stages(args.preset, dataset=args.dataset, out_root=args.out, stages=STAGES, init_checkpoint=args.init, **kwargs)
        else:
            results = [train_stage(args.stage, args.preset, dataset=args.dataset, out_dir=args.out, init_checkpoint=args.init, **kwargs)]
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_rank() == 0:
            for res in results:
                print(json.dumps({k: v for k, v in res.to_dict().items() if k != "losses"}), flush=True)
        if dist.is_initialized():  # every rank leaves together and joins gloo's threads: left to the
            dist.barrier()  # interpreter's exit they can abort a finished rank ("terminate called ...")
            dist.destroy_process_group()
        return 0
    if args.cmd == "precompute":
        from .adapter import get_adapter
        from .data import precompute

        index = precompute(args.dataset, get_adapter(args.preset), args.out, digest=args.digest, progress=print)
        print(json.dumps({"index": str(index.root / "index.json"), "clips": len(index), "dataset_digest": index.dataset_digest, "encoder": index.encoder}))
        return 0
    if args.cmd == "render-job":
        from .manifests import ClusterSpec, render_pytorchjob, render_trainjob, to_yaml

        spec = ClusterSpec(nodes=args.nodes, gpus_per_node=args.gpus, **({"image": args.image} if args.image else {}))
        render = render_trainjob if args.kind == "trainjob" else render_pytorchjob
        print(to_yaml(render(args.stage, args.preset, spec, dataset=args.dataset, out_root=args.out_root, release_id=args.release_id)), end="")
        return 0
    if args.cmd == "golden":
        from . import golden

        losses = golden.debug_losses()
        if args.write:
            print(f"wrote {golden.write_golden(losses)}")
            return 0
        problems = golden.compare(losses, golden.load_golden())
        for line in problems:
            print(line)
        print("golden: OK" if not problems else f"golden: {len(problems)} value(s) drifted")
        return 1 if problems else 0
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
