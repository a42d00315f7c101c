"""The ``mavin-ops`` command line.

    mavin-ops data generate --preset debug --out DIR     synthetic MAVINSet-mini
    mavin-ops data ingest SRC... --out DIR               real footage -> the same dataset layout
    mavin-ops data version DIR                           DVC-version a dataset directory
    mavin-ops data validate DIR                          Great Expectations + grounding checks
    mavin-ops script check FILE...                       MTSS scripts on their own: every issue, one line each
    mavin-ops release                                    the release pipeline, locally
    mavin-ops release --source DIR                       the same on your own footage (ingest in place of generate)
    mavin-ops release --resume RELEASE_ID                re-run a failed release; finished steps are reused
    mavin-ops train --stage STAGE --dataset DIR          one training stage (DeepSpeed)
    mavin-ops export CKPT --out REPO                     ONNX + Triton repository
    mavin-ops publish REPO | serve | generate            model store, tritonserver, client
    mavin-ops smoke                                      serve the champion, generate one clip, stop
    mavin-ops evaluate GENERATED --out DIR               the papers' metrics -> metrics.json
    mavin-ops gate METRICS --out DIR                     floors + bootstrap non-regression vs champion
    mavin-ops promote MODEL VERSION --reason ...         move the champion alias (gate must have passed)
    mavin-ops rollback MODEL --reason ...                back to the previous champion
    mavin-ops history MODEL                              the promotion audit trail
    mavin-ops lineage MODEL@ALIAS [--html PAGE]          served version -> runs -> data -> commit
    mavin-ops verify MODEL                               was the champion put there by the platform?
    mavin-ops releases                                   recent releases, verdicts, report pages
    mavin-ops completion bash|zsh|tcsh                   shell completion script
    mavin-ops compile | submit | schedule                the cluster path (KFP IR YAML, runs, cron)

Errors a user can cause print one line (``mavin-ops: error: ...``) and exit 2; a failed
pipeline or a failed validation exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

from mavin_ops.errors import MavinError
from mavin_ops.presets import MODEL_PRESETS, RELEASE_PRESETS, WORLD_PRESETS  # declared once there

__all__ = ["build_parser", "main"]


class UserError(MavinError):
    """An error the user can fix; printed as one line."""


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --------------------------------------------------------------------------- data


def _data_generate(args: argparse.Namespace) -> int:
    from mavin_ops.data import synth

    summary = synth.generate(args.out, preset=args.preset, seed=args.seed, progress=not args.quiet, overwrite=args.overwrite)
    _print_json(summary)
    return 0


def _data_ingest(args: argparse.Namespace) -> int:
    from mavin_ops.data import ingest

    report = ingest.ingest(args.sources, args.out, preset=args.preset, workers=args.workers, progress=not args.quiet,
                           settings=ingest.with_settings(args.preset, eval_share=args.eval_share))
    c = report["counts"]
    if args.sheets:
        sheets = ingest.write_sheets(args.out, args.sheets)
        print(f"contact sheets of {len(sheets)} clips in {args.sheets}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        _print_json(report)
        return 0
    print(f"ingested {c['sources_ingested']} of {c['videos']} videos ({c['seconds_of_footage']:.1f} s of footage) into "
          f"{args.out}: {c['clips']['train']} train and {c['clips']['eval']} eval clips, {c['clips_with_script_issues']} "
          f"that disagree with their sidecar script (validation quarantines them), {c['rejected']} rejected "
          f"(see {Path(args.out) / 'rejected.jsonl'}); measurements in {Path(args.out) / 'ingest.json'}")
    return 0


def _data_version(args: argparse.Namespace) -> int:
    from mavin_ops import tracking
    from mavin_ops.data import versioning

    v = versioning.version_dataset(
        args.dataset,
        name=args.name,
        registry=args.registry,
        remote=args.remote,
        endpoint_url=args.endpoint_url,
        push=not args.no_push,
    )
    commit, dirty = tracking.git_commit()
    _print_json({**v.to_dict(), "code_commit": commit, "code_dirty": dirty})
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from mavin_ops.data import validate

    out_dir = Path(args.out) if args.out else Path(args.dataset).resolve().parent / (Path(args.dataset).name + ".validation")
    given = {field: getattr(args, arg) for field, arg in (("min_duration_s", "min_duration"), ("max_duration_s", "max_duration"),
             ("min_shots", "min_shots"), ("max_shots", "max_shots"), ("frame_stride", "frame_stride"),
             ("spatial_multiple", "spatial_multiple")) if getattr(args, arg) is not None}
    try:
        limits = validate.ValidationLimits(**given)
    except ValueError as exc:
        raise UserError(f"data validate: {exc}") from None
    report = validate.validate_dataset(
        args.dataset,
        max_quarantine_share=args.max_quarantine_share,
        max_customized_roles=args.max_customized_roles,
        limits=limits,
        check_media=not args.no_media,
        out_dir=out_dir,
        docs_dir=out_dir / "data_docs",
        build_docs=not args.no_docs,
        workers=args.workers,
        validated_dir=args.validated,
    )
    if not report.passed:
        print(f"mavin-ops data validate: {validate.ValidationFailed(report)}", file=sys.stderr)
    if args.json:
        _print_json(json.loads(Path(report.summary).read_text(encoding="utf-8")))
        return 0 if report.passed else 1
    print(report.describe())
    if args.validated and report.passed:
        print(f"validated dataset: {args.validated}")
    if report.docs_index is not None:
        print(f"Data Docs: {report.docs_index}")
    return 0 if report.passed else 1


# --------------------------------------------------------------------------- script


def _script_check(args: argparse.Namespace) -> int:
    """Every issue of every script, one ``file: clip: path: [rule] message`` line each on
    stdout; a count on stderr. Exit 0 when clean, 1 when some script has issues; a file that
    is missing or does not decode is the user's mistake (exit 2, checked before any output)."""
    import itertools

    from mavin_ops import mtss

    for name in args.files:
        if not Path(name).exists():
            raise UserError(f"{name} does not exist; pass MTSS script files (JSON or YAML), manifest.jsonl files or dataset folders")
    checks = []
    for name in args.files:
        issues = mtss.file_issues(name, max_customized_roles=args.max_customized_roles)
        try:
            first = next(issues, None)  # a missing manifest or an undecodable script raises here
        except mtss.ScriptError as exc:
            raise UserError(f"{name}: {exc.issues[0].message}; pass an MTSS script (JSON or YAML) or a manifest.jsonl") from None
        checks.append((name, first, issues))
    total = bad_files = 0
    for name, first, issues in checks:
        count = 0
        for issue in itertools.chain((first,), issues) if first is not None else ():
            count += 1
            print(f"{name}: {issue.clip_id}: {issue.field}: [{issue.rule}] {issue.message}")
        total += count
        bad_files += count > 0
    n = len(args.files)
    print(f"script check: {total} issue(s) in {bad_files} of {n} file(s)" if total else f"script check: {n} file(s), no issues", file=sys.stderr)
    return 1 if total else 0


# --------------------------------------------------------------------------- release


#: The pipeline options of ``mavin-ops release``: a resumed release keeps the ones it was started with.
_RELEASE_OPTIONS = ("preset", "seed", "registry", "remote", "endpoint_url", "max_quarantine_share", "train_steps",
                    "sample_steps", "sample_limit", "model", "policy", "dataset_rev", "source", "ingest_shards", "train_procs", "base")


def _apply_release_file(args: argparse.Namespace) -> None:
    """``--config FILE``: its options, where the command line left the default (flags win)."""
    if not getattr(args, "config", None):
        return
    from mavin_ops.release_config import load_release_config

    cfg = load_release_config(args.config)
    defaults = build_parser().parse_args(["release"])
    for name, value in cfg.model_dump(exclude_unset=True).items():
        if getattr(args, name) == getattr(defaults, name):
            setattr(args, name, value)


def _release(args: argparse.Namespace) -> int:
    from mavin_ops.release import run_release

    if args.resume and args.config:
        raise UserError("--resume reruns the release with the options it was started with; drop --config")
    _apply_release_file(args)
    if args.resume:
        defaults = build_parser().parse_args(["release"])
        given = [f"--{k.replace('_', '-')}" for k in _RELEASE_OPTIONS if getattr(args, k) != getattr(defaults, k)]
        if given:
            raise UserError(f"--resume reruns the release with the options it was started with; drop {', '.join(given)}")
        if not args.cache:
            raise UserError("--resume reuses the cached steps; drop --no-cache")
    result = run_release(
        preset=args.preset,
        seed=args.seed,
        registry=args.registry or "",
        remote=args.remote or "",
        endpoint_url=args.endpoint_url or "",
        max_quarantine_share=args.max_quarantine_share,
        train_steps=args.train_steps,
        sample_steps=args.sample_steps,
        sample_limit=args.sample_limit,
        model_name=args.model,
        gate_policy=args.policy or "",
        dataset_rev=args.dataset_rev,
        source=args.source,
        ingest_shards=args.ingest_shards,
        train_procs=args.train_procs,
        base=args.base,
        cache=args.cache,
        resume=args.resume,
        echo=print,
        verbose=args.verbose,
        # -q: no step lines or bars, only the summary at the end (the logs are in files as always)
        terminal=open(os.devnull, "w") if args.global_quiet else None,
    )
    if result.interrupted:
        return 128 + result.interrupted  # 130 for Ctrl-C, 143 for SIGTERM, as the shell reports it
    if result.succeeded and result.tags.get("mavin.verdict") == "promoted":
        from mavin_ops import lineage

        print(f"lineage of {args.model}@champion:")
        print(lineage.render_text(lineage.lineage(f"{args.model}@champion")))
    return 0 if result.succeeded else 1


# --------------------------------------------------------------------------- training


def _pretrain(args: argparse.Namespace) -> int:
    from mavin_ops.pretrain import run_pretrain

    if args.from_checkpoint:
        from mavin_ops import foundation

        if not args.ship:
            raise UserError("--from-checkpoint packages a base checkpoint: name the folder to write it to with --ship DIR")
        if not args.world:
            raise UserError("--from-checkpoint needs --world DATASET, the folder the base was trained on (its card records it)")
        metrics = {}
        if args.metrics:  # an evaluation's metrics.json, or a flat {name: number} object
            try:
                doc = json.loads(Path(args.metrics).read_text()[:1 << 20])
            except (OSError, ValueError) as exc:
                raise UserError(f"--metrics {args.metrics}: not a readable JSON file ({exc})") from None
            flat = doc.get("metrics", doc) if isinstance(doc, dict) else {}
            metrics = {k: (v.get("mean") if isinstance(v, dict) else v) for k, v in flat.items()}
            metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        out = foundation.package_checkpoint(args.from_checkpoint, args.ship, world=args.world, command=args.command, metrics=metrics,
                                            notes=args.note)
        print(f"shipped: {out} and {out.with_suffix('.json').name}")
        return 0

    result = run_pretrain(args.preset, args.seed, steps=args.steps, sample_limit=args.sample_limit, sample_steps=args.sample_steps,
                          train_procs=args.train_procs, run_id=args.run_id, ship=args.ship, echo=None if args.quiet else print)
    if args.json:
        import dataclasses

        _print_json(dataclasses.asdict(result))
    return 0 if result.succeeded else 1


def _train(args: argparse.Namespace) -> int:
    from mavin_ops import settings
    from mavin_ops.training.launch import StageLaunch, launch

    out = Path(args.out) if args.out else settings.home() / "train" / args.preset / args.stage
    spec = StageLaunch(args.stage, args.preset, dataset=args.dataset, out_dir=str(out), nproc=args.nproc,
                       init_checkpoint=args.init, steps=args.steps, track=not args.no_track)
    result = launch(spec, log_dir=out.parent / f".{out.name}.ranks" if args.nproc > 1 else None)
    _print_json(
        {
            "stage": args.stage,
            "step": result.step,
            "checkpoint": str(result.checkpoint),
            "checkpoint_sha256": result.checkpoint_sha256,
            "final_loss": result.losses[-1]["loss"] if result.losses else None,
            "mlflow_run_id": result.run_id,
        }
    )
    return 0


# --------------------------------------------------------------------------- serving


def _export(args: argparse.Namespace) -> int:
    from mavin_ops.serving.repository import export_and_build

    export_and_build(args.checkpoint, args.out, version=args.version, log=print)
    print(f"repository: {args.out}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from mavin_ops import settings
    from mavin_ops.serving.store import publish

    published = publish(args.repository, args.store or str(settings.home() / "model-store"), name=args.name, endpoint_url=args.endpoint_url)
    import dataclasses

    _print_json(dataclasses.asdict(published))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from mavin_ops import settings
    from mavin_ops.serving.server import run_server

    store = None if args.repository else (args.store or str(settings.home() / "model-store"))
    version = args.version
    if store is not None and version is None:
        version = _champion_triton_version(args.name, args.trust_alias)
    return run_server(
        args.repository,
        store=store,
        name=args.name,
        version=version,
        endpoint_url=args.endpoint_url,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
    )


def _smoke(args: argparse.Namespace) -> int:
    from mavin_ops import settings
    from mavin_ops.serving.smoke import smoke_test

    store = args.store or str(settings.home() / "model-store")
    version = args.version if args.version is not None else _champion_triton_version(args.name, args.trust_alias)
    out = Path(args.out)
    try:
        res = smoke_test(store, name=args.name, version=version, endpoint_url=args.endpoint_url, steps=args.steps, workdir=out, log=print)
    except AssertionError as exc:
        raise UserError(str(exc)) from None
    print(f"served {args.name} version {res.version} answered `generate`: {out / 'smoke.mp4'} ({res.frames} frames "
          f"{res.height}x{res.width}, {res.audio_samples} audio samples) from the script {out / 'scene'}; "
          f"contact sheet: {out / 'smoke.png'}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from mavin_ops import registry

    if args.repair:
        for change in registry.repair(args.model):
            print(f"{args.model}: repaired {change}")
    problems = registry.verify(args.model, mlflow=args.mlflow)
    champion = _ledger_champion(args.model)
    if args.json:
        print(json.dumps({"model": args.model, "champion": champion, "ok": not problems,
                          "problems": problems}, indent=1))
    elif problems:
        for line in problems:
            print(f"{args.model}: {line}")
    else:
        print(f"{args.model}: champion v{champion or '-'} is where the signed ledger put it, its gate passed, "
              "and MLflow mirrors the ledger")
    return 1 if problems else 0


def _ledger_champion(model: str) -> str | None:
    from mavin_ops import registry

    try:
        return registry.champion_version(model)
    except registry.PromotionError:
        return None


def _champion_triton_version(model: str, trust_alias: bool = False) -> int:
    """The Triton version the signed ledger registered for the champion, so that a rollback
    also rolls back what `serve` serves. Refused, in one line, when :func:`registry.verify`
    finds anything wrong or there is no champion (never "the newest"); ``trust_alias`` serves
    what MLflow's alias names instead (its ``mavin.triton_version`` tag), an operator's call."""
    from mavin_ops import registry
    from mavin_ops.reader import reader

    if not trust_alias:
        version = registry.champion_triton_version(model)
        if version is None:
            raise UserError(f"model '{model}' has no champion in the ledger; run a release that passes the gate "
                            "(mavin-ops release) or name a published version with --version")
        problems = registry.verify(model)
        if problems:
            raise UserError(f"{model}: {problems[0]} (or pass --trust-alias to serve what the alias names anyway)")
        return version
    alias = registry.alias_version(model)
    if alias is None:
        raise UserError(f"model '{model}' has no champion alias in MLflow; name a published version with --version")
    tag = reader().model_version(model, alias).tags.get(registry.TRITON_TAG)
    if not re.fullmatch(r"[0-9]{1,9}", str(tag or "")):
        import reprlib

        raise UserError(f"champion alias of {model} names v{alias}, whose mavin.triton_version {reprlib.repr(tag)} is not a version number; pass --version")
    return int(tag)


def _role_files(pairs: list[str], flag: str, kind: str) -> dict[str, str]:
    """``ROLE=FILE`` options as {role: file}; a malformed one is the user's mistake."""
    out: dict[str, str] = {}
    for pair in pairs:
        role, sep, path = pair.partition("=")
        if not sep or not role or not path:
            raise UserError(f"{flag} '{pair}' must look like ROLE={kind}, e.g. {flag} R1=ref.{kind.lower()}")
        out[role] = path
    return out


def _generate(args: argparse.Namespace) -> int:
    from mavin_ops.serving.client import generate

    images = _role_files(args.image, "--image", "PNG")
    voices = _role_files(args.voice, "--voice", "WAV")
    result = generate(
        args.script, args.out, url=args.url, protocol=args.protocol, images=images or None, voices=voices or None,
        seed=args.seed, steps=args.steps,
    )
    print(f"wrote {result.path}: clip {result.clip_id}, {result.num_frames} frames with its audio track")
    return 0


# --------------------------------------------------------------------------- evaluation


def _evaluate(args: argparse.Namespace) -> int:
    from mavin_ops.evaluation.runner import evaluate_dir

    result = evaluate_dir(args.generated, args.benchmark, args.out, config=args.config, val_metrics=args.val_metrics, sheets=args.sheets)
    means = {name: m.get("mean") for name, m in result["metrics"].items()}
    _print_json({"metrics_json": str(Path(args.out) / "metrics.json"), "benchmark": result["benchmark"], "means": means})
    return 0


def _encoder_train(args: argparse.Namespace) -> int:
    import shlex

    from tqdm import tqdm

    from mavin_ops.evaluation.encoder import EncoderRecipe, train_encoder

    command = "mavin-ops encoder train " + " ".join(
        shlex.quote(a) for a in ("--data", args.data, "--out", args.out, "--steps", str(args.steps), "--seed", str(args.seed))
    )
    with tqdm(total=args.steps, desc="encoder", unit="step", disable=args.quiet) as bar:
        def progress(step: int, total: int, loss: float) -> None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")

        info = train_encoder(args.data, args.out, EncoderRecipe(steps=args.steps, seed=args.seed), progress=progress, command=command)
    _print_json({"encoder": args.out, "sha256": info["sha256"], "checks": info.get("checks"), "train_seconds": info["train_seconds"]})
    return 0


def _gate(args: argparse.Namespace) -> int:
    from mavin_ops.evaluation.gate import run_gate

    decision = run_gate(
        args.metrics, args.policy, args.out, model_name=args.model, champion_metrics_path=args.champion_metrics
    )
    if args.json:
        _print_json(decision.to_dict())
        return 0 if decision.passed else 1
    print(decision.summary())
    print(f"report: {Path(args.out) / 'gate.html'}")
    return 0 if decision.passed else 1


# --------------------------------------------------------------------------- registry


def _promote(args: argparse.Namespace) -> int:
    from mavin_ops import registry

    expected = registry.ANY_CHAMPION if args.expect_champion is None else (None if args.expect_champion == "none" else args.expect_champion)
    record = registry.promote(args.model, args.version, reason=args.reason, who=args.who, expected_champion=expected)
    print(record.line())
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from mavin_ops import registry

    print(registry.rollback(args.model, reason=args.reason, who=args.who).line())
    return 0


def _history(args: argparse.Namespace) -> int:
    from mavin_ops import registry

    trail = registry.history(args.model, mlflow=args.mlflow)
    if args.json:
        _print_json([r.__dict__ for r in trail])
    else:
        print(f"{args.model}: champion v{registry.champion_version(args.model) or '-'}")
        for record in trail:
            print(record.line())
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from mavin_ops import lineage

    chain = lineage.lineage(args.model, mlflow=args.mlflow)
    if args.json:
        import dataclasses

        _print_json([dataclasses.asdict(link) for link in chain])
        return 0
    print(lineage.render_text(chain))
    if args.html:
        print(f"page: {lineage.render_html(chain, args.html, title=f'lineage of {args.model}')}")
    return 0


def _releases(args: argparse.Namespace) -> int:
    from mavin_ops.release import list_releases

    rows = list_releases(args.limit)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no releases yet under $MAVIN_HOME/releases; run one with: mavin-ops release", file=sys.stderr)
        return 0
    print(f"{'release':<26} {'started (UTC)':<19} {'took':>7}  {'verdict':<13} {'champion':<14} page")
    for r in rows:
        if "error" in r:
            print(f"{r['release_id']:<26} {r['error']}")
            continue
        before, after = (f"v{v}" if v else "none" for v in (r.get("champion_before"), r.get("champion_after")))
        champ = before if before == after else f"{before} -> {after}"
        took = f"{int(r['duration_s'] // 60)}m{int(r['duration_s'] % 60):02d}s"
        print(f"{r['release_id']:<26} {r['started']:<19} {took:>7}  {r['verdict'] or '-':<13} {champ:<14} {r['page'] or '-'}")
    return 0


# --------------------------------------------------------------------------- cluster


def _profile(args: argparse.Namespace):
    from mavin_ops.pipelines.cluster import DEFAULT_PROFILE, ClusterProfile

    return ClusterProfile.load(args.profile or DEFAULT_PROFILE)


def _plan(args: argparse.Namespace) -> int:
    from mavin_ops.training.manifests import ClusterSpec, to_yaml
    from mavin_ops.training.plan import check_fits, gpu_memory_gb, plan

    memory = args.gpu_memory_gb
    if memory is None:
        memory = gpu_memory_gb(_profile(args).gpu) if args.profile else 80.0
    spec = ClusterSpec(nodes=args.nodes, gpus_per_node=args.gpus_per_node)
    stages = plan(args.preset, args.nodes, args.gpus_per_node, memory, spec=spec)
    if args.json:
        print(json.dumps([s.to_dict() for s in stages], indent=1))
    else:
        print(f"{args.preset} preset on {args.nodes} x {args.gpus_per_node} GPUs of {memory:g} GB "
              "(model states per GPU by DeepSpeed's estimator, frozen weights in bf16; activations not included)")
        print(f"{'stage':<10} {'trained':>9} {'frozen':>9} {'ZeRO':>4} {'states/GPU':>11} {'frozen/GPU':>11} {'total/GPU':>10}  fits")
        for s in stages:
            print(f"{s.stage:<10} {s.trainable / 1e9:8.2f}B {s.frozen / 1e9:8.2f}B {s.zero_stage:>4} {s.model_states_gb:9.1f} GB "
                  f"{s.frozen_gb:9.1f} GB {s.per_gpu_gb:8.1f} GB  {'yes' if s.fits else 'NO'}")
        if args.trainjob:
            print(to_yaml([s.trainjob for s in stages]))
    check_fits(stages)
    return 0


def _file_params(args: argparse.Namespace) -> dict[str, str]:
    """``--config FILE`` as pipeline parameters (``--param`` given too wins)."""
    if not args.config:
        return {}
    from mavin_ops.release_config import load_release_config, pipeline_arguments

    return pipeline_arguments(load_release_config(args.config))


def _arguments(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--param '{pair}' must look like name=value")
        key, value = pair.split("=", 1)
        out[key] = value
    return out


def _compile(args: argparse.Namespace) -> int:
    from mavin_ops.pipelines.cluster import COMPILED, compile_pipeline

    path = compile_pipeline(_profile(args), args.out or COMPILED)
    print(f"compiled the release pipeline to {path}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    import time

    from mavin_ops.pipelines import cluster

    name = args.run_name or time.strftime("mavin-release-%Y%m%d-%H%M%S", time.gmtime())
    request = cluster.run_request(_profile(args), args.host, _file_params(args) | _arguments(args.param), name)
    if args.dry_run:
        print(cluster.dumps(request))
        return 0
    _print_json(cluster.submit(request))
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from mavin_ops.pipelines import cluster

    request = cluster.recurring_run_request(
        _profile(args), args.host, _file_params(args) | _arguments(args.param), args.name, args.cron, args.max_concurrency
    )
    if args.dry_run:
        print(cluster.dumps(request))
        return 0
    _print_json(cluster.submit(request))
    return 0


# --------------------------------------------------------------------------- parser


def _name(what: str) -> Callable[[str], str]:
    """An argparse type for a name that becomes a path (mavin_ops/safety.py decides)."""

    def check(value: str) -> str:
        from mavin_ops.safety import UnsafeName, check_name

        try:
            return check_name(value, what)
        except UnsafeName as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    check.__name__ = what  # argparse names the type in its message
    return check


def _count(low: int) -> Callable[[str], int]:
    """An argparse type for an integer option that must be at least ``low``."""

    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{value}' is not an integer") from None
        if number < low:
            raise argparse.ArgumentTypeError(f"{number} is below {low}")
        return number

    check.__name__ = f"integer >= {low}"
    return check


def _share(value: str) -> float:
    """An argparse type for a share in [0, 1]."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{number} is not between 0 and 1")
    return number


def _url(value: str) -> str:
    """An argparse type for a URL option: credentials never go in it."""
    from mavin_ops.safety import UnsafeURL, check_url

    try:
        check_url(value if "://" in value else f"http://{value}", "the URL")  # a host:port address too
        return value
    except UnsafeURL as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors (exit 2), sub-commands included."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        from mavin_ops.safety import redact

        self.exit(2, f"mavin-ops: error: {self.prog.removeprefix('mavin-ops ')}: {redact(message)}\n")



#: One example per command, shown at the end of its --help (tests/test_cli.py checks every command has one).
EXAMPLES = {
    "data": "mavin-ops data generate --preset tiny --out datasets/tiny",
    "data generate": "mavin-ops data generate --preset tiny --seed 0 --out datasets/tiny",
    "data ingest": "mavin-ops data ingest my-footage/ --out datasets/mine --sheets datasets/mine.sheets",
    "data version": "mavin-ops data version datasets/tiny --name mavinset-mini",
    "data validate": "mavin-ops data validate datasets/tiny --validated datasets/tiny.validated",
    "script": "mavin-ops script check scripts/*.mtss.json",
    "script check": "mavin-ops script check scripts/*.mtss.json",
    "release": "mavin-ops release --preset debug --train-steps 2 --sample-limit 2",
    "releases": "mavin-ops releases --limit 5",
    "train": "mavin-ops train --stage id --preset debug --dataset datasets/debug --steps 2",
    "pretrain": "mavin-ops pretrain --preset tiny --seed 1000 --steps 8000 --run-id base-tiny",
    "encoder": "mavin-ops encoder train --data datasets/tiny --out world.safetensors",
    "encoder train": "mavin-ops encoder train --data datasets/tiny --out world.safetensors",
    "export": "mavin-ops export .mavin/train/tiny/joint/final --out /tmp/repo",
    "publish": "mavin-ops publish /tmp/repo --model mavin",
    "serve": "mavin-ops serve --model mavin",
    "generate": "mavin-ops generate --script scripts/scene.mtss.json --out clip.mp4",
    "smoke": "mavin-ops smoke --out served-check",
    "evaluate": "mavin-ops evaluate generated/ --out eval/",
    "gate": "mavin-ops gate eval/metrics.json --out gate/",
    "promote": "mavin-ops promote mavin 3 --reason 'gate passed on the nightly benchmark'",
    "rollback": "mavin-ops rollback mavin --reason 'regression reported by the serving team'",
    "history": "mavin-ops history mavin --json",
    "lineage": "mavin-ops lineage mavin@champion --html lineage.html",
    "compile": "mavin-ops compile --profile pipelines/profiles/cluster.example.yaml",
    "submit": "mavin-ops submit --host https://kfp.example.internal --param preset=tiny",
    "schedule": "mavin-ops schedule --host https://kfp.example.internal --cron '0 0 2 * * *'",
    "verify": "mavin-ops verify mavin",
    "plan": "mavin-ops plan --preset paper --nodes 4 --gpus-per-node 8 --trainjob",
    "completion": "mavin-ops completion bash   # e.g. into ~/.local/share/bash-completion/completions/mavin-ops",
}


def _add_examples(sub: argparse._SubParsersAction, prefix: str = "") -> None:
    """Append each command's example (:data:`EXAMPLES`) to its help epilog, nested commands too."""
    for name, p in sub.choices.items():
        key = f"{prefix}{name}"
        if key in EXAMPLES and "example:" not in (p.epilog or ""):
            p.epilog = ((p.epilog + "\n\n") if p.epilog else "") + f"example: {EXAMPLES[key]}"
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_examples(action, key + " ")


def _completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mavin-ops",
        description="Train, evaluate, gate and release multi-shot audio-visual generation models.",
        epilog="Local state lives under $MAVIN_HOME (default ./.mavin); MLFLOW_TRACKING_URI is respected.",
    )
    from mavin_ops import __version__

    parser.add_argument("--version", action="version", version=f"mavin-ops {__version__}")
    parser.add_argument("-q", "--quiet", dest="global_quiet", action="store_true", help="no progress output (every command)")
    parser.add_argument("-v", "--verbose", dest="global_verbose", action="store_true",
                        help="more output (release: stream every step's log)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="generate, version and validate datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    gen = dsub.add_parser("generate", help="generate the synthetic MAVINSet-mini dataset")
    gen.add_argument("--preset", default="debug", choices=WORLD_PRESETS, help="dataset size preset; base is the foundation model's world (default: debug)")
    gen.add_argument("--seed", type=_count(0), default=0, help="random seed; same seed, same bytes (default: 0)")
    gen.add_argument("--out", required=True, help="output dataset directory (must not exist or be empty)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    gen.add_argument("--quiet", action="store_true", help="no progress output")
    gen.set_defaults(func=_data_generate)

    ing = dsub.add_parser(
        "ingest",
        help="turn your own video files into a dataset: shots, speech, speakers, faces, scripts, references",
        description="Ingest real footage (mp4, mov, mkv, webm; any size, rate and codec PyAV decodes) into the dataset "
        "layout: shots are detected and grouped into clips of the preset's size, rate and 4k+1 frame counts; black, "
        "static, short, unreadable or silent material is refused with its reason in rejected.jsonl; a sidecar "
        "<stem>.mtss.json next to a video is the human script and is checked against what was measured, otherwise a "
        "script is drafted (set MAVIN_CAPTIONER_URL and MAVIN_CAPTIONER_MODEL to have an OpenAI-compatible endpoint "
        "write its text). An interrupted ingest resumes: run the same command again.",
    )
    ing.add_argument("sources", nargs="+", metavar="SRC", help="video files or folders of them")
    ing.add_argument("--out", required=True, help="output dataset folder (empty, or an earlier ingest to resume)")
    ing.add_argument("--preset", default="tiny", choices=RELEASE_PRESETS, help="output format preset (default: tiny)")
    ing.add_argument("--workers", type=_count(1), default=None, help="processes, one source each (default: every core)")
    ing.add_argument("--eval-share", type=float, default=0.1, help="share of sources held out as the benchmark (default: 0.1)")
    ing.add_argument("--sheets", metavar="DIR", default=None, help="also draw a contact sheet per clip (frames per shot, reference portraits, waveform with dialogue and cuts) into DIR")
    ing.add_argument("--quiet", action="store_true", help="no progress bar")
    ing.add_argument("--json", action="store_true", help="print ingest.json's report on stdout instead of the summary line")
    ing.set_defaults(func=_data_ingest)

    ver = dsub.add_parser("version", help="DVC-version a dataset directory in the data registry and push it")
    ver.add_argument("dataset", help="dataset directory (holds manifest.jsonl)")
    ver.add_argument("--name", default="mavinset-mini", type=_name("dataset name"), help="dataset name in the registry (default: mavinset-mini)")
    ver.add_argument("--registry", default=None, help="data registry path (default: $MAVIN_HOME/data-registry)")
    ver.add_argument("--remote", default=None, type=_url, help="DVC remote: a directory or s3://bucket/prefix (default: $MAVIN_HOME/dvc-remote)")
    ver.add_argument("--endpoint-url", default=None, type=_url, help="S3 endpoint URL for an s3:// remote (credentials from the environment)")
    ver.add_argument("--no-push", action="store_true", help="commit the version but do not push to the remote")
    ver.set_defaults(func=_data_version)

    val = dsub.add_parser("validate", help="validate a dataset; failing clips go to a quarantine manifest")
    val.add_argument("dataset", help="dataset directory (holds manifest.jsonl)")
    val.add_argument("--out", default=None, help="report folder (default: <dataset>.validation next to the dataset)")
    val.add_argument("--max-quarantine-share", type=_share, default=0.05, help="fail above this quarantined share (default: 0.05)")
    val.add_argument("--max-customized-roles", type=_count(0), default=3, help="customized roles allowed per clip (default: 3)")
    val.add_argument("--no-media", action="store_true", help="skip media existence and sha256 checks")
    val.add_argument("--json", action="store_true", help="print validation.json on stdout instead of the summary")
    val.add_argument(
        "--validated",
        default=None,
        metavar="DIR",
        help="when it passes, write the validated dataset (the clips that passed, their media, the quarantine record) "
        "to DIR: what `train` and `evaluate` should read, so that no quarantined clip is trained on or scored",
    )
    val.add_argument("--no-docs", action="store_true", help="skip the Great Expectations Data Docs site (faster)")
    val.add_argument("--workers", type=_count(1), default=None, help="scan processes (default: one per core)")
    limits = val.add_argument_group("limits", "the suite's numeric rules (defaults fit the synthetic world and the papers' clips)")
    for flag, kind, what in (("--min-duration", float, "shortest clip, seconds (default 0.5)"), ("--max-duration", float, "longest clip, seconds (default 15)"),
                             ("--min-shots", int, "fewest shots (default 1)"), ("--max-shots", int, "most shots (default 6)"),
                             ("--frame-stride", int, "num_frames = stride*k+1 (default 4)"),
                             ("--spatial-multiple", int, "width and height are multiples of it (default 8)")):
        limits.add_argument(flag, type=kind, default=None, help=what)
    val.set_defaults(func=_data_validate)

    scr = sub.add_parser("script", help="check MTSS scene scripts on their own")
    ssub = scr.add_subparsers(dest="script_command", metavar="ACTION", required=True)
    chk = ssub.add_parser(
        "check",
        help="validate scripts with the parser and grounding rules of validation and generate; print every issue",
    )
    chk.add_argument("files", nargs="+", metavar="FILE", help="a script (JSON, or YAML for .yaml/.yml), a manifest.jsonl or a dataset folder")
    chk.add_argument("--max-customized-roles", type=_count(0), default=3, help="customized roles allowed per clip (default: 3)")
    chk.set_defaults(func=_script_check)

    rel = sub.add_parser("release", help="run the release pipeline with the KFP local runner")
    rel.add_argument("--preset", default="tiny", choices=RELEASE_PRESETS, help="dataset/model preset (default: tiny)")
    rel.add_argument("--seed", type=_count(0), default=0, help="data seed (default: 0)")
    rel.add_argument("--registry", default=None, help="data registry path (default: $MAVIN_HOME/data-registry)")
    rel.add_argument("--remote", default=None, type=_url, help="DVC remote (default: $MAVIN_HOME/dvc-remote)")
    rel.add_argument("--endpoint-url", default=None, type=_url, help="S3 endpoint URL for an s3:// remote")
    rel.add_argument("--max-quarantine-share", type=_share, default=0.05, help="validation threshold (default: 0.05)")
    rel.add_argument("--train-steps", type=_count(0), default=0, help="override every stage's step count (default: the recipe's)")
    rel.add_argument("--sample-steps", type=_count(0), default=0, help="sampler steps for the benchmark clips (default: the model's)")
    rel.add_argument("--sample-limit", type=_count(0), default=0, help="benchmark clips to generate (default: all)")
    rel.add_argument("--model", default="mavin", type=_name("model name"), help="registered model name (default: mavin)")
    rel.add_argument("--policy", default=None, help="gate policy YAML (default: evaluation/gate_policy.yaml)")
    rel.add_argument(
        "--base",
        default="",
        metavar="BASE",
        help="the foundation model the id stage fine-tunes: mavin-base@champion, mavin-base@<version>, a version number, "
        "a base checkpoint folder or a .safetensors file with its card (default: the base the project ships for the preset)",
    )
    rel.add_argument(
        "--dataset-rev",
        default="",
        help="train on this version from the data registry instead of generating fresh data: a tag "
        "(mavinset-mini-v3), a registry git revision, or 'latest' (the newest version when the run starts)",
    )
    rel.add_argument(
        "--source",
        default="",
        metavar="DIR",
        help="train on your own footage: ingest the videos in DIR (mavin-ops data ingest) in place of generating data, "
        "then version, validate, train, gate, export and promote as usual",
    )
    rel.add_argument("--train-procs", type=_count(1), default=1,
                     help="train every stage with this many local processes (torchrun: gloo on CPU, NCCL on GPUs; default: 1)")
    rel.add_argument("--ingest-shards", type=_count(1), default=1, help="with --source: ingest in this many parallel shards (default: 1, every core)")
    rel.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record every finished step in the KFP local runner's cache ($MAVIN_HOME/pipelines/.kfp_cache) so that "
        "--resume can reuse it (default: on). Keys include the release id: a new release never reuses another "
        "release's steps. --no-cache records nothing; resuming such a release runs every step again",
    )
    rel.add_argument(
        "--resume",
        metavar="RELEASE_ID",
        default=None,
        type=_name("release id"),
        help="run a failed or interrupted release again under the same release id, with the options it was started "
        "with: the steps it finished are reused from the cache (not run again), the train step resumes from its "
        "working checkpoints, and its MLflow parent run is reopened and closed with the new final status",
    )
    rel.add_argument("--config", default=None, metavar="FILE",
                     help="a release file (YAML): every option above as a field (train_steps: 2, model: mavin-nightly, ...); "
                     "checked before anything runs; flags given here win over it; relative paths are read next to the file")
    rel.add_argument("-v", "--verbose", action="store_true",
                     help="stream every step's log to the terminal (by default: one line per step; the full logs are always "
                     "written to $MAVIN_HOME/releases/<id>/logs/<step>.log)")
    rel.set_defaults(func=_release)

    sm = sub.add_parser(
        "smoke",
        help="serve the champion's published version on a real tritonserver, ask it for a clip with the generate client, stop it",
    )
    sm.add_argument("--model", "--name", dest="name", default="mavin", type=_name("model name"), help="registered model / store name (default: mavin)")
    sm.add_argument("--trust-alias", action="store_true", help="serve the champion even when `mavin-ops verify` finds it was not put there by the platform")
    sm.add_argument("--version", type=_count(1), default=None, help="published version (default: the champion's)")
    sm.add_argument("--store", default=None, type=_url, help="model store (default: $MAVIN_HOME/model-store)")
    sm.add_argument("--endpoint-url", default=None, type=_url, help="S3 endpoint URL for an s3:// store")
    sm.add_argument("--steps", type=_count(1), default=None, help="sampler steps (default: the model's)")
    sm.add_argument("--out", default="served-check", help="folder for the example script and the generated mp4 (default: served-check)")
    sm.set_defaults(func=_smoke)

    from mavin_ops.training.recipes import ALL_STAGES

    pt = sub.add_parser("pretrain", help="train, evaluate and register the foundation model (mavin-base) that releases fine-tune")
    pt.add_argument("--preset", default="tiny", choices=MODEL_PRESETS, help="model preset (default: tiny)")
    from mavin_ops.presets import MIN_BASE_SEED as MIN_SEED

    pt.add_argument("--seed", type=_count(0), default=MIN_SEED,
                    help=f"world seed, {MIN_SEED} or more: lower seeds are the release benchmarks' (default: {MIN_SEED})")
    pt.add_argument("--steps", type=_count(0), default=0, help="the base stage's total steps (default: the recipe's); rerun with the same "
                    "--run-id and more steps to train on from the last checkpoint")
    pt.add_argument("--sample-limit", type=_count(1), default=8, help="held-out clips of the world to generate and score (default: 8)")
    pt.add_argument("--sample-steps", type=_count(0), default=0, help="sampler steps (default: the model's)")
    pt.add_argument("--train-procs", type=_count(1), default=1, help="local training processes (default: 1)")
    pt.add_argument("--run-id", default=None, type=_name("run id"), help="name of the run; the same name resumes it (default: a new one)")
    pt.add_argument("--ship", default=None, metavar="DIR", help="also package the result as DIR/<preset>.safetensors + .json "
                    "(the project's shipped base lives in training/bases)")
    pt.add_argument("--from-checkpoint", default=None, metavar="CKPT", help="package this base checkpoint (e.g. from `train --stage base`) "
                    "with --ship instead of running the pipeline")
    pt.add_argument("--world", default=None, metavar="DATASET", help="with --from-checkpoint: the dataset folder the base trained on")
    pt.add_argument("--command", default="", help="with --from-checkpoint: the command that reproduces the checkpoint, for its card")
    pt.add_argument("--metrics", default=None, metavar="JSON", help="with --from-checkpoint: the base's scores (a metrics.json, or a "
                    "flat JSON object of numbers), for its card")
    pt.add_argument("--note", default="", help="with --from-checkpoint: a note for its card (how it was trained)")
    pt.add_argument("--json", action="store_true", help="print the result as JSON")
    pt.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    pt.set_defaults(func=_pretrain)

    tr = sub.add_parser("train", help="train one stage (base | id | multishot | av | joint) with the DeepSpeed engine")
    tr.add_argument("--stage", required=True, choices=ALL_STAGES, help="training stage (base: the foundation model)")
    tr.add_argument("--preset", default="tiny", choices=MODEL_PRESETS, help="model preset (default: tiny)")
    tr.add_argument("--dataset", required=True, help="dataset directory (manifest.jsonl + media)")
    tr.add_argument("--init", default=None, help="checkpoint of the previous stage to start from")
    tr.add_argument("--out", default=None, help="checkpoint folder (default: $MAVIN_HOME/train/<preset>/<stage>); resumes when it holds one")
    tr.add_argument("--steps", type=_count(0), default=0, help="override the recipe's step count")
    tr.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    tr.add_argument("--nproc", type=_count(1), default=1,
                    help="processes on this machine (torchrun --standalone: gloo on CPU, NCCL on GPUs); 1 trains in this process "
                    "(default: 1)")
    tr.set_defaults(func=_train)

    ex = sub.add_parser("export", help="export a checkpoint to ONNX (parity-checked) and build a Triton repository")
    ex.add_argument("checkpoint", help="a training checkpoint folder or a .safetensors model file")
    ex.add_argument("--out", required=True, help="Triton model repository folder to build")
    ex.add_argument("--version", type=_count(1), default=1, help="model version number in the repository (default: 1)")
    ex.set_defaults(func=_export)

    pub = sub.add_parser("publish", help="publish a built repository to the model store, atomically")
    pub.add_argument("repository", help="repository folder built by `mavin-ops export`")
    pub.add_argument("--store", default=None, type=_url, help="a folder or s3://bucket/prefix (default: $MAVIN_HOME/model-store)")
    pub.add_argument("--model", "--name", dest="name", default="mavin", type=_name("model name"), help="model name in the store (default: mavin)")
    pub.add_argument("--endpoint-url", default=None, type=_url, help="S3 endpoint URL for an s3:// store")
    pub.set_defaults(func=_publish)

    srv = sub.add_parser("serve", help="serve a repository or a published version with the local tritonserver")
    srv.add_argument("--repository", default=None, help="a repository folder (default: fetch from --store)")
    srv.add_argument("--store", default=None, type=_url, help="model store (default: $MAVIN_HOME/model-store)")
    srv.add_argument("--model", "--name", dest="name", default="mavin", type=_name("model name"), help="model name in the store (default: mavin)")
    srv.add_argument("--trust-alias", action="store_true", help="serve the champion even when `mavin-ops verify` finds it was not put there by the platform")
    srv.add_argument("--version", type=_count(1), default=None, help="published version (default: the champion's, else the newest complete one)")
    srv.add_argument("--endpoint-url", default=None, type=_url, help="S3 endpoint URL for an s3:// store")
    srv.add_argument("--http-port", type=int, default=8000, help="HTTP port on 127.0.0.1 (default: 8000)")
    srv.add_argument("--grpc-port", type=int, default=8001, help="gRPC port on 127.0.0.1 (default: 8001)")
    srv.add_argument("--metrics-port", type=int, default=8002, help="metrics port on 127.0.0.1 (default: 8002)")
    srv.set_defaults(func=_serve)

    gen2 = sub.add_parser("generate", help="generate an mp4 (video + audio track) from an MTSS script through Triton")
    gen2.add_argument("--script", required=True, help="MTSS scene script (JSON)")
    gen2.add_argument("--out", required=True, help="output mp4")
    gen2.add_argument("--url", default=None, type=_url, help="server URL (default: 127.0.0.1:8000 for HTTP, :8001 for gRPC)")
    gen2.add_argument("--protocol", default="http", choices=["http", "grpc"], help="client protocol (default: http)")
    gen2.add_argument("--image", action="append", default=[], metavar="ROLE=PNG", help="reference image for a role (repeatable)")
    gen2.add_argument("--voice", action="append", default=[], metavar="ROLE=WAV", help="reference voice for a role (repeatable)")
    gen2.add_argument("--seed", type=_count(0), default=0, help="sampling seed (default: 0)")
    gen2.add_argument("--steps", type=_count(1), default=None, help="sampler steps (default: the model's)")
    gen2.set_defaults(func=_generate)

    ev = sub.add_parser("evaluate", help="score generated clips against the benchmark with the papers' metrics")
    ev.add_argument("generated", help="folder of generated clips in the dataset layout (manifest.jsonl + media)")
    ev.add_argument("--benchmark", default=None, help="benchmark dataset folder (default: score GENERATED's own media)")
    ev.add_argument("--out", required=True, help="output folder for metrics.json")
    ev.add_argument("--config", default=None, help="evaluation config YAML (default: evaluation/eval_config.yaml)")
    ev.add_argument("--val-metrics", default=None, help="validation flow-matching losses: a JSON file or runs:/<id>")
    ev.add_argument(
        "--sheets", action=argparse.BooleanOptionalAction, default=True,
        help="draw a contact sheet per clip and a summary under <out>/sheets (default: on)",
    )
    ev.set_defaults(func=_evaluate)

    enc = sub.add_parser("encoder", help="the world encoder the evaluation sees frames with (fidelity, character presence, CISC/BISC)")
    esub = enc.add_subparsers(dest="encoder_command", metavar="ACTION", required=True)
    etr = esub.add_parser(
        "train",
        help="train it on a dataset's training split and write the .safetensors file with its lineage .json "
        "(the shipped one: --data <tiny dataset, seed 0> --out evaluation/encoders/world-tiny.safetensors)",
    )
    etr.add_argument("--data", required=True, help="dataset directory (holds manifest.jsonl; the train split is used, eval for the checks)")
    etr.add_argument("--out", required=True, help="encoder file to write (.safetensors; the lineage goes next to it as .json)")
    etr.add_argument("--steps", type=_count(1), default=4000, help="optimizer steps (default: 4000)")
    etr.add_argument("--seed", type=_count(0), default=0, help="random seed (default: 0)")
    etr.add_argument("--quiet", action="store_true", help="no progress bar")
    etr.set_defaults(func=_encoder_train)

    gt = sub.add_parser("gate", help="decide the release gate: floors + non-regression vs the champion")
    gt.add_argument("metrics", help="the challenger's metrics.json")
    gt.add_argument("--policy", default=None, help="gate policy YAML (default: evaluation/gate_policy.yaml)")
    gt.add_argument("--out", required=True, help="output folder for gate.json and gate.html")
    gt.add_argument("--json", action="store_true", help="print gate.json on stdout instead of the summary line")
    gt.add_argument("--model", default="mavin", type=_name("model name"), help="registered model whose 'champion' alias is compared (default: mavin)")
    gt.add_argument("--champion-metrics", default=None, help="compare with this metrics.json instead of the registry champion")
    gt.set_defaults(func=_gate)

    pro = sub.add_parser("promote", help="move the champion alias to a version whose gate passed")
    pro.add_argument("model", type=_name("model name"), help="registered model name")
    pro.add_argument("version", help="model version to promote")
    pro.add_argument("--reason", required=True, help="why; recorded in the audit trail")
    pro.add_argument("--who", default=None, help="who promotes (default: $MAVIN_USER or the login name)")
    pro.add_argument("--expect-champion", default=None, help="fail with a conflict unless the champion is this version ('none' for no champion)")
    pro.set_defaults(func=_promote)

    rb = sub.add_parser("rollback", help="return the champion alias to the previous champion")
    rb.add_argument("model", type=_name("model name"), help="registered model name")
    rb.add_argument("--reason", required=True, help="why; recorded in the audit trail")
    rb.add_argument("--who", default=None, help="who rolls back (default: $MAVIN_USER or the login name)")
    rb.set_defaults(func=_rollback)

    hist = sub.add_parser("history", help="the promotion audit trail of a model")
    hist.add_argument("model", type=_name("model name"), help="registered model name")
    hist.add_argument("--json", action="store_true", help="print JSON records")
    hist.add_argument("--mlflow", action="store_true", help="read through MLflow's client (slower; the local store is otherwise read directly)")
    hist.set_defaults(func=_history)

    pl = sub.add_parser("plan", help="what each training stage asks of a cluster: trained/frozen parameters, ZeRO, memory per GPU, its TrainJob",
                        description="Plan the training stages of a preset on N nodes x G GPUs without submitting anything: "
                        "the model is built on the meta device (no memory, no weights read). Exits 2 when a stage does not fit.")
    pl.add_argument("--preset", default="paper", choices=MODEL_PRESETS, help="model preset (default: paper)")
    pl.add_argument("--nodes", type=_count(1), default=4, help="nodes (default: 4)")
    pl.add_argument("--gpus-per-node", type=_count(1), default=8, help="GPUs per node (default: 8)")
    pl.add_argument("--gpu-memory-gb", type=float, default=None, help="memory of one GPU (default: from --profile's gpu type, else 80)")
    pl.add_argument("--profile", default=None, help="cluster profile whose gpu section gives the GPU memory")
    pl.add_argument("--trainjob", action="store_true", help="also print the TrainJob of every stage (YAML)")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")
    pl.set_defaults(func=_plan)

    ver_m = sub.add_parser("verify", help="check the signed ledger, and that MLflow mirrors it (champion alias, tags, audit trail)",
                           description="Exit 1 and say what to do, one line per problem, when the platform's signed ledger was "
                           "changed without its key (a record edited, added or deleted), or MLflow does not mirror it: the "
                           "champion alias moved outside mavin-ops (e.g. the MLflow UI's Promote button), the champion's "
                           "version deleted or its gate or Triton tag edited, an audit tag edited, added or deleted.")
    ver_m.add_argument("model", type=_name("model name"), help="registered model name")
    ver_m.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    ver_m.add_argument("--mlflow", action="store_true", help="read through MLflow's client (slower; the local store is otherwise read directly)")
    ver_m.add_argument("--repair", action="store_true", help="first write MLflow's copy (alias, tags) again from the ledger; the ledger itself is never changed")
    ver_m.set_defaults(func=_verify)

    rels = sub.add_parser("releases", help="the recent releases: when, how long, verdict, champion before and after, report page",
                          description="List the releases run on this machine (newest first) from $MAVIN_HOME/releases.",
                          epilog="example: mavin-ops releases --limit 5")
    rels.add_argument("--limit", type=_count(1), default=20, help="how many (default: 20)")
    rels.add_argument("--json", action="store_true", help="print the list as JSON on stdout")
    rels.set_defaults(func=_releases)

    lin = sub.add_parser("lineage", help="walk a model version back to its data, runs and commit")
    lin.add_argument("model", help="<model>@<alias|version>, e.g. mavin-tiny@champion")
    lin.add_argument("--html", default=None, metavar="PAGE", help="also write the chain as an HTML page with a drawn graph")
    lin.add_argument("--json", action="store_true", help="print the chain as JSON on stdout")
    lin.add_argument("--mlflow", action="store_true", help="read through MLflow's client (slower; the local store is otherwise read directly)")
    lin.set_defaults(func=_lineage)

    profile_help = "cluster profile YAML (default: pipelines/profiles/cluster.example.yaml)"
    comp = sub.add_parser("compile", help="compile the release pipeline to KFP IR YAML with a cluster profile")
    comp.add_argument("--profile", default=None, help=profile_help)
    comp.add_argument("--out", default=None, help="output YAML (default: pipelines/release.yaml, the committed copy)")
    comp.set_defaults(func=_compile)

    subm = sub.add_parser("submit", help="start a release run on a Kubeflow Pipelines endpoint")
    subm.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example.internal")
    subm.add_argument("--profile", default=None, help=profile_help)
    subm.add_argument("--config", default=None, metavar="FILE", help="a release file (see mavin-ops release --config); --param wins over it")
    subm.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
    subm.add_argument("--run-name", default=None, help="run display name (default: mavin-release-<UTC time>)")
    subm.add_argument("--dry-run", action="store_true", help="print the exact request instead of sending it")
    subm.set_defaults(func=_submit)

    sch = sub.add_parser("schedule", help="create a recurring release run (cron) on a KFP endpoint")
    sch.add_argument("--host", required=True, help="KFP API endpoint")
    sch.add_argument("--cron", required=True, help="cron expression, e.g. '0 0 3 * * *' (03:00 daily)")
    sch.add_argument("--max-concurrency", type=int, default=1, help="runs allowed at once (default: 1, no overlap)")
    sch.add_argument("--name", default="mavin-release-nightly", help="recurring run name (default: mavin-release-nightly)")
    sch.add_argument("--profile", default=None, help=profile_help)
    sch.add_argument("--config", default=None, metavar="FILE", help="a release file (see mavin-ops release --config); --param wins over it")
    sch.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
    sch.add_argument("--dry-run", action="store_true", help="print the exact request instead of sending it")
    sch.set_defaults(func=_schedule)

    comp_sh = sub.add_parser("completion", help="print a shell completion script (bash, zsh or tcsh)",
                             description="Print a completion script for mavin-ops (generated from this parser by shtab).")
    comp_sh.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="the shell")
    comp_sh.set_defaults(func=_completion)
    _add_examples(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """What the command line prints as one line (exit 2): the platform's error root, and a
    file named on the command line that is missing or already there."""
    return (MavinError, FileNotFoundError, FileExistsError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "global_quiet", False) and hasattr(args, "quiet"):
        args.quiet = True
    if getattr(args, "global_verbose", False) and hasattr(args, "verbose"):
        args.verbose = True
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _user_errors() as exc:
        from mavin_ops.safety import redact

        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"mavin-ops: error: {redact(message)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
