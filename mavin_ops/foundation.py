"""The foundation model (the *base*) that every release of a preset fine-tunes.

The papers never train from scratch: MAVIN and MTSS fine-tune a pretrained audio-video model
(Ovi) stage by stage. Here the ``base`` stage (MAVIN's text-driven stage 1, every parameter on
a synthetic world of its own, ``mavin-ops pretrain``) makes that model, and a release's ``id``
stage starts from it.

A base travels in three forms:

- **shipped**: ``training/bases/<preset>.safetensors`` (the model weights, exactly the
  checkpoint's ``model.safetensors``) and ``<preset>.json`` (its *card*: sha256 and size of the
  weights, the step, recipe and model config, the data it read with their digests and seeds, the
  commit, the exact command that reproduces it, and its scores);
- **a checkpoint folder** the trainer reads (:func:`materialize`: a ``step-*`` folder under
  ``$MAVIN_HOME/bases/`` written with the atomic checkpoint protocol, stage ``base``, complete);
- **a registered model version** of ``mavin-base`` in MLflow (:func:`register`: once per
  sha256, with the card as params, tags and artifact; the first one becomes ``champion``).

:func:`resolve` turns what a release names (``--base``: empty for the shipped base,
``mavin-base@champion``, ``mavin-base@3``, ``3``, or a path to a checkpoint folder or a
``.safetensors`` file with its card beside it) into a :class:`ResolvedBase`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mavin_ops import settings
from mavin_ops.data.manifest import atomic_writer
from mavin_ops.data.manifest import sha256_file as _sha256
from mavin_ops.errors import MavinError

__all__ = [
    "BASE_MODEL",
    "SHIPPED_DIR",
    "BaseError",
    "ResolvedBase",
    "card_from_meta",
    "card_of",
    "materialize",
    "package",
    "register",
    "resolve",
    "shipped",
]

#: The registered model name of foundation models in MLflow.
BASE_MODEL = "mavin-base"
#: Where the project's shipped bases live (package data of mavin_ops.training, found without
#: importing it).
SHIPPED_DIR = Path(importlib.util.find_spec("mavin_ops.training").submodule_search_locations[0]) / "bases"
#: The foundation world's dataset name in the data registry.
BASE_WORLD = "mavinset-base"
#: Card tag holding the weights' sha256 on a model version: one version per distinct base.
SHA_TAG = "mavin.base_sha256"
CARD_FORMAT = 1
_CARD_MAX_BYTES = 1 << 20


def pretrain_command(preset: str, seed: int, steps: int, ship: str | os.PathLike | None = None) -> str:
    """The command that reproduces a base (what its card records)."""
    return f"mavin-ops pretrain --preset {preset} --seed {seed} --steps {steps}" + (f" --ship {ship}" if ship else "")


class BaseError(MavinError, ValueError):
    """A base that cannot be used: the message names it and what to do (a user's mistake)."""


@dataclass(frozen=True)
class ResolvedBase:
    """A base ready for training: its checkpoint folder and where it came from."""

    checkpoint: Path  # a step-* folder (stage base, complete)
    ref: str  # mavin-base@<version>, or the path it was read from
    sha256: str  # of the model weights
    card: dict[str, Any]

    @property
    def version(self) -> str:
        return self.ref.rsplit("@", 1)[1] if self.ref.startswith(f"{BASE_MODEL}@") else ""


# --------------------------------------------------------------------------- cards


def card_of(weights: str | os.PathLike) -> dict[str, Any]:
    """The card beside ``<name>.safetensors`` (``<name>.json``), checked against the weights."""
    weights = Path(weights)
    card_path = weights.with_suffix(".json")
    if not weights.is_file():
        raise BaseError(f"base weights {weights} not found")
    if not card_path.is_file():
        raise BaseError(f"base {weights} has no card {card_path.name} beside it; package it with `mavin-ops pretrain --ship`")
    if card_path.stat().st_size > _CARD_MAX_BYTES:
        raise BaseError(f"base card {card_path} is larger than {_CARD_MAX_BYTES} bytes; it is not a card")
    try:
        card = json.loads(card_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BaseError(f"base card {card_path} is not JSON ({exc}); restore it from the repository") from None
    if not isinstance(card, dict):
        raise BaseError(f"base card {card_path}: expected an object")
    for key in ("sha256", "preset", "step", "model", "recipe"):
        if key not in card:
            raise BaseError(f"base card {card_path}: field '{key}' is missing")
    from mavin_ops.training.recipes import BASE_STAGE, PRESETS

    step = card["step"]
    if card.get("stage") != BASE_STAGE or not isinstance(step, int) or isinstance(step, bool) or step < 0 or card["preset"] not in PRESETS:
        raise BaseError(f"base card {card_path}: needs stage 'base', a step >= 0 and a preset of {', '.join(PRESETS)}; "
                        f"got stage {str(card.get('stage'))[:20]!r}, step {str(step)[:20]!r}, preset {str(card['preset'])[:20]!r}")
    if not isinstance(card["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", card["sha256"]):
        raise BaseError(f"base card {card_path}: sha256 is not 64 hex digits")
    actual = _sha256(weights)
    if actual != card["sha256"]:
        raise BaseError(f"base weights {weights} have sha256 {actual[:12]}..., the card says {str(card['sha256'])[:12]}...; restore both files")
    return card


def shipped(preset: str) -> tuple[Path, dict[str, Any]] | None:
    """(weights, card) of the base the project ships for ``preset``, or None."""
    weights = SHIPPED_DIR / f"{preset}.safetensors"
    if not weights.is_file():
        return None
    return weights, card_of(weights)


def package(checkpoint: str | os.PathLike, out: str | os.PathLike, *, command: str, data: dict[str, Any],
            metrics: dict[str, Any] | None = None, notes: str = "") -> Path:
    """Write ``out`` (``<name>.safetensors``) and its card from a ``base`` checkpoint.

    ``data`` describes the world it read (name, preset, seed, digest, clips); ``command`` is
    the exact command that reproduces it; ``metrics`` its scores (the learning curve's last
    point). Both files are written atomically, the weights first."""
    from mavin_ops.training import checkpoint as ckpt
    from mavin_ops.training.trainer import check_base

    info = check_base(Path(checkpoint))
    meta = ckpt.load_json(info, "meta.json")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.copyfile(info.file("model.safetensors"), tmp)
    os.replace(tmp, out)
    card = card_from_meta(meta, _sha256(out), command=command, data=data, metrics=metrics, notes=notes, size=out.stat().st_size)
    with atomic_writer(out.parent, out.with_suffix(".json").name) as fh:
        fh.write(json.dumps(card, indent=1, sort_keys=True) + "\n")
    return out


def package_checkpoint(checkpoint: str | os.PathLike, folder: str | os.PathLike, *, world: str | os.PathLike,
                       command: str = "", metrics: dict[str, Any] | None = None, notes: str = "") -> Path:
    """Package a ``base`` checkpoint trained outside the pipeline (``train --stage base``) as
    ``folder/<preset>.safetensors`` and its card; ``world`` is the dataset it trained on (its
    ``mavinset.json`` and manifest digest go on the card)."""
    from mavin_ops.training import checkpoint as ckpt
    from mavin_ops.training.data import dataset_digest
    from mavin_ops.training.trainer import check_base

    info = check_base(Path(checkpoint))
    meta = ckpt.load_json(info, "meta.json")
    world = Path(world)
    summary_path = world / "mavinset.json"
    if not summary_path.is_file():
        raise BaseError(f"{world} is not a generated world: {summary_path.name} is missing (mavin-ops data generate writes it)")
    try:
        summary = json.loads(summary_path.read_text())
        seed = int(summary["seed"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BaseError(f"{summary_path} is not a world summary with a seed; regenerate the world") from None
    digest = dataset_digest(world)
    if meta.get("dataset", {}).get("digest") not in ("", None, digest):
        raise BaseError(f"checkpoint {info.path} trained on data {meta['dataset']['digest'][:12]}..., not {world} ({digest[:12]}...)")
    data = {"name": BASE_WORLD, "preset": summary.get("preset", ""), "seed": seed, "digest": digest, "clips": summary.get("clips", {})}
    cmd = command or (f"mavin-ops data generate --preset {data['preset']} --seed {seed} --out datasets/base && "
                      f"mavin-ops train --stage base --preset {meta['preset']} --dataset datasets/base --out runs/base --steps {meta['step']}")
    return package(info.path, Path(folder) / f"{meta['preset']}.safetensors", command=cmd, data=data, metrics=metrics, notes=notes)


# --------------------------------------------------------------------------- checkpoint form


def materialize(weights: str | os.PathLike, card: dict[str, Any]) -> Path:
    """The base as a trainer checkpoint (``$MAVIN_HOME/bases/<preset>-<sha12>/step-*``),
    written once with the atomic protocol; the weights file is copied byte for byte, so its
    sha256 in the manifest is the card's."""
    from mavin_ops.training import checkpoint as ckpt

    root = settings.home() / "bases" / f"{card['preset']}-{card['sha256'][:12]}"
    found = ckpt.find_resumable(root, log=None) if root.is_dir() else None
    if found is not None and found.manifest["files"].get("model.safetensors", {}).get("sha256") == card["sha256"]:
        return found.path
    step = int(card["step"])
    tmp = ckpt.begin_checkpoint(root, step)
    shutil.copyfile(weights, tmp / "model.safetensors")
    written = {"model.safetensors": {"sha256": _sha256(tmp / "model.safetensors"), "bytes": (tmp / "model.safetensors").stat().st_size}}
    meta = {
        "format": 1,
        "stage": "base",
        "preset": card["preset"],
        "step": step,
        "step_offset": 0,
        "global_step": int(card.get("global_step", step)),
        "complete": True,
        "recipe": card["recipe"],
        "model": card["model"],
        "dataset": {"digest": card.get("dataset_digest", "")},
        "losses": [],
        "lineage": {"git_commit": card.get("commit", ""), "base_sha256": card["sha256"]},
    }
    return ckpt.save_checkpoint(root, step, tensors={}, json_files={"meta.json": meta}, tmp=tmp, written=written).path


# --------------------------------------------------------------------------- registry


def register(weights: str | os.PathLike, card: dict[str, Any], *, run_id: str | None = None, tags: dict[str, str] | None = None,
             champion: bool = False) -> tuple[str, Path]:
    """Register the base as a version of ``mavin-base`` (once per sha256; an existing version
    is returned). The first version becomes the champion, and so does this one with
    ``champion`` (what ``mavin-ops pretrain`` does with what it trained: a base passes no gate,
    its evaluation is on its run). Returns the version number and the checkpoint folder."""
    from mavin_ops import registry, tracking

    c = tracking.client()
    with registry._lock(BASE_MODEL):
        checkpoint = materialize(weights, card)
        existing = _version_with_sha(c, card["sha256"])
        if existing is not None:
            if champion:
                c.set_registered_model_alias(BASE_MODEL, registry.CHAMPION, existing)
            return existing, checkpoint
        if run_id is None:
            run_id = _card_run(c, card)
        version = registry.register_version(
            BASE_MODEL,
            str(checkpoint),
            run_id=run_id,
            tags={
                SHA_TAG: card["sha256"],
                "mavin.preset": card["preset"],
                "mavin.base_step": card["step"],
                "mavin.dataset_digest": card.get("dataset_digest", ""),
                "mavin.git_commit": card.get("commit", ""),
                "mavin.command": card.get("command", "")[:4000],
                "mavin.data": json.dumps(card.get("data", {}), sort_keys=True)[:4000],
                **(tags or {}),
            },
        )
        if champion or registry.alias_version(BASE_MODEL) is None:
            c.set_registered_model_alias(BASE_MODEL, registry.CHAMPION, version)
        return version, checkpoint


def _version_with_sha(c: Any, sha: str) -> str | None:
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise BaseError(f"base sha256 '{sha[:80]}' is not 64 hex digits")
    from mlflow.exceptions import MlflowException

    try:
        found = c.search_model_versions(f"name = '{BASE_MODEL}' and tags.`{SHA_TAG}` = '{sha}'")
    except MlflowException:
        return None
    return str(min(int(v.version) for v in found)) if found else None


def _card_run(c: Any, card: dict[str, Any]) -> str:
    """An MLflow run that records a shipped base: its card as params, metrics and artifact."""
    from mavin_ops import tracking

    exp = tracking.experiment_id(BASE_MODEL)
    run = c.create_run(exp, run_name=f"base-{card['preset']}-{card['sha256'][:12]}", tags={"mavin.step": "base", SHA_TAG: card["sha256"]})
    rid = run.info.run_id
    from mlflow.entities import Metric, Param

    params = {
        "preset": card["preset"],
        "step": card["step"],
        "dataset_digest": card.get("dataset_digest", ""),
        "git_commit": card.get("commit", ""),
        "command": card.get("command", ""),
    }
    metrics = {k: float(v) for k, v in (card.get("metrics") or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    c.log_batch(rid, params=[Param(k, str(v)[:500]) for k, v in params.items()],
                metrics=[Metric(k, v, 0, int(card["step"])) for k, v in metrics.items() if v == v])
    c.log_dict(rid, card, "base_card.json")
    c.set_terminated(rid, "FINISHED")
    return rid


# --------------------------------------------------------------------------- resolve


def resolve(spec: str, preset: str) -> ResolvedBase | None:
    """What ``release --base`` names, ready to train from; None for ``none`` (only for a
    preset that trains from scratch).

    ``spec``: empty = the base the project ships for ``preset`` (registered on first use);
    ``mavin-base@<alias|version>`` or a bare version number = a registered base; otherwise a
    path to a ``base`` checkpoint folder or to a ``.safetensors`` file with its card beside it."""
    from mavin_ops.training.recipes import needs_base

    spec = (spec or "").strip()
    if spec == "none":
        if needs_base(preset):
            raise BaseError(f"preset '{preset}' fine-tunes a foundation model; name one with --base or drop --base none")
        return None
    if not spec:
        if not needs_base(preset):
            return None
        found = shipped(preset)
        if found is None:
            raise BaseError(f"no base is shipped for preset '{preset}'; train one (mavin-ops pretrain) and pass --base mavin-base@champion")
        version, checkpoint = register(*found)
        return ResolvedBase(checkpoint, f"{BASE_MODEL}@{version}", found[1]["sha256"], found[1])
    if spec.isdigit():
        spec = f"{BASE_MODEL}@{spec}"
    if spec.startswith(f"{BASE_MODEL}@"):
        return _from_registry(spec, preset)
    path = Path(spec).expanduser()
    if path.suffix == ".safetensors":
        card = card_of(path)
        _same_preset(card, preset, spec)
        version, checkpoint = register(path, card)
        return ResolvedBase(checkpoint, f"{BASE_MODEL}@{version}", card["sha256"], card)
    return _from_checkpoint(path, preset, str(path))


def _from_registry(ref: str, preset: str) -> ResolvedBase:
    from mlflow.exceptions import MlflowException

    from mavin_ops import tracking

    name, which = ref.rsplit("@", 1)
    c = tracking.client()
    try:
        mv = c.get_model_version(name, which) if which.isdigit() else c.get_model_version_by_alias(name, which)
    except MlflowException:
        raise BaseError(f"no base {ref} in MLflow; `mavin-ops pretrain` registers one, a release registers the shipped one") from None
    try:
        path = settings.local_path(mv.source)
    except ValueError as exc:
        raise BaseError(f"base {ref}: its source {mv.source[:200]} is refused ({exc})") from None
    found = _from_checkpoint(path, preset, f"{name}@{mv.version}")
    # The registry's record of the weights, not the folder, says what the base is.
    if found.sha256 != mv.tags.get(SHA_TAG):
        raise BaseError(f"base {name}@{mv.version}: the weights at {mv.source[:200]} have sha256 {found.sha256[:12]}..., "
                        f"the version was registered with {str(mv.tags.get(SHA_TAG))[:12]}...; re-register the base")
    return found


def _from_checkpoint(path: Path, preset: str, ref: str) -> ResolvedBase:
    from mavin_ops.training import checkpoint as ckpt
    from mavin_ops.training.trainer import TrainError, check_base

    try:
        info = check_base(path)
    except (TrainError, ckpt.CheckpointError, OSError) as exc:
        raise BaseError(f"base {ref}: {exc}") from None
    meta = ckpt.load_json(info, "meta.json")
    _same_preset(meta, preset, ref)
    if ref.startswith(f"{BASE_MODEL}@"):  # registered already
        return ResolvedBase(info.path, ref, info.manifest["files"]["model.safetensors"]["sha256"], meta)
    # A base checkpoint named by its path: registered like a shipped one, so lineage finds it.
    card = card_from_meta(meta, info.manifest["files"]["model.safetensors"]["sha256"], command=f"(checkpoint {path})")
    version, checkpoint = register(info.file("model.safetensors"), card)
    return ResolvedBase(checkpoint, f"{BASE_MODEL}@{version}", card["sha256"], card)


def card_from_meta(meta: dict[str, Any], sha: str, *, command: str, data: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None, notes: str = "", size: int | None = None) -> dict[str, Any]:
    """A base's card from its checkpoint's meta.json."""
    return {
        "format": CARD_FORMAT,
        "name": BASE_MODEL,
        "sha256": sha,
        "bytes": size,
        "preset": meta["preset"],
        "stage": meta["stage"],
        "step": meta["step"],
        "global_step": meta.get("global_step", meta["step"]),
        "recipe": meta["recipe"],
        "model": meta["model"],
        "data": data or {},
        "dataset_digest": (meta.get("dataset") or {}).get("digest", ""),
        "commit": (meta.get("lineage") or {}).get("git_commit", ""),
        "command": command,
        "metrics": metrics or {},
        "final_losses": (meta.get("losses") or [])[-5:],
        "notes": notes,
    }


def _same_preset(card: dict[str, Any], preset: str, where: str) -> None:
    if card.get("preset") != preset:
        raise BaseError(f"base {where} is a '{card.get('preset')}' model; this release trains preset '{preset}'")
