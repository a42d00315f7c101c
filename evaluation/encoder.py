"""The world encoder: a small CNN the project trains on the synthetic world's training split,
so the evaluation can see what a person sees (is a character drawn? is a scene drawn? do the
frames look like the world?) where no pretrained network fits 32x32 sprites.

Papers measure visual fidelity and identity in the feature space of a pretrained network
(FVD with I3D, ViCLIP features for CISC/BISC in MAVIN eq. S8, ArcFace for identity). The
synthetic world has no such network, so, as papers do with a domain classifier, we train one
on the training split (identities, scenes, objects) and ship it as a versioned artifact
(``encoders/<name>.safetensors`` + ``<name>.json`` with its sha256, the dataset digest, the
recipe and the command that reproduces it). Every metrics report names its sha256.

One convolutional trunk, four uses:

- ``features(frames)``: a 64-d embedding per frame (the Fréchet distance and the whole-shot
  features p_i of CISC/BISC);
- ``presence(frames, reference)``: the probability that the character of a reference image
  is drawn in each frame (a correlation of the reference's embedding with every position of
  the frame's feature map, max over positions, so it does not matter where it stands);
- a species head: which kinds of character are drawn (multi-label: person, the animals,
  the objects), for characters without a reference image;
- ``scene(frames)``: the probability that a frame shows a drawn scene of the world (wall
  texture, floor) rather than noise with its colours.

The evaluation asks for all four of a shot in one pass of the trunk (``shot_summary``).

Trained with negatives a broken model makes (pixels shuffled within the frame, per-patch
colour noise, uniform noise) so none of the heads fires on coloured noise, and with the
references of other characters (of the same clip and of other clips) as presence negatives.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from mavin_ops.errors import MavinError
from mavin_ops.data.manifest import sha256_file

__all__ = [
    "DEFAULT_ENCODER",
    "ENCODER_DIR",
    "EncoderError",
    "EncoderRecipe",
    "SPECIES",
    "WorldEncoder",
    "frechet_distance",
    "load_encoder",
    "train_encoder",
]

ENCODER_DIR = Path(__file__).resolve().parent / "encoders"
#: The shipped encoder of the embedded world (trained on MAVINSet-mini tiny, seed 0).
DEFAULT_ENCODER = ENCODER_DIR / "world-tiny.safetensors"
#: Multi-label character kinds of the synthetic world (``data/synth.py``).
SPECIES = ("person", "cat", "dog", "rabbit", "lamp", "bell", "box", "clock")
SIZE = 32  # frames are resized (nearest) to SIZE x SIZE
DIM = 64


class EncoderError(MavinError, ValueError):
    """An encoder file that cannot be used (missing, changed, wrong format)."""


@dataclass(frozen=True)
class EncoderRecipe:
    steps: int = 4000
    batch: int = 64
    lr: float = 2e-3
    seed: int = 0
    width: int = 32
    dim: int = DIM
    #: More worlds to learn identities from: tiny MAVINSet-mini worlds generated with these
    #: seeds (every split), besides the given dataset's training split. The benchmark's
    #: identities are never among them (its eval split is not read for training).
    world_seeds: tuple[int, ...] = tuple(range(101, 109))
    #: The same for ``debug`` worlds (16x16 frames), so the encoder sees their characters too.
    debug_world_seeds: tuple[int, ...] = tuple(range(201, 231))


# --------------------------------------------------------------------------- module


def _build(width: int = 32, dim: int = DIM):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.trunk = nn.Sequential(
                nn.Conv2d(3, w // 2, 3, padding=1), nn.GELU(),
                nn.Conv2d(w // 2, w, 3, stride=2, padding=1), nn.GELU(),  # 16x16
                nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(),
                nn.Conv2d(2 * w, dim, 3, stride=2, padding=1),  # 8x8
            )
            self.embed = nn.Sequential(nn.GELU(), nn.Linear(2 * dim, dim))
            self.query = nn.Conv2d(dim, dim, 1)
            self.key = nn.Linear(2 * dim, dim)
            self.match = nn.Linear(1, 1)  # scale and bias of the best cosine match
            with torch.no_grad():
                self.match.weight.fill_(10.0)
                self.match.bias.fill_(-5.0)
            self.species = nn.Linear(dim, len(SPECIES))
            self.scene = nn.Linear(dim, 1)

        def fmap(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) in [0, 1]
            return self.trunk(x * 2.0 - 1.0)

        def pooled(self, m: torch.Tensor) -> torch.Tensor:
            return torch.cat([m.mean(dim=(2, 3)), m.amax(dim=(2, 3))], dim=1)

        def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            m = self.fmap(x)
            return m, self.embed(self.pooled(m))

        def presence_logit(self, m: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
            """Frame maps (N, D, h, w) against reference images (N, 3, S, S): (N,) logits."""
            k = nn.functional.normalize(self.key(self.pooled(self.fmap(ref))), dim=1)
            q = nn.functional.normalize(self.query(m), dim=1)
            best = torch.einsum("ndhw,nd->nhw", q, k).flatten(1).amax(dim=1)
            return self.match(best[:, None])[:, 0]

    return Net()


def _resize(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) or (H, W, 3) -> (N, SIZE, SIZE, 3), nearest neighbour (a 16x16 world frame
    becomes exact 2x2 blocks)."""
    f = np.asarray(frames)
    if f.ndim == 3:
        f = f[None]
    h, w = f.shape[1:3]
    if (h, w) != (SIZE, SIZE):
        ys = (np.arange(SIZE) * h // SIZE).clip(0, h - 1)
        xs = (np.arange(SIZE) * w // SIZE).clip(0, w - 1)
        f = f[:, ys][:, :, xs]
    return f


def _to_input(frames: np.ndarray):
    """(N, H, W, 3) uint8 -> (N, 3, SIZE, SIZE) float tensor in [0, 1] (nearest resize)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(_resize(frames).transpose(0, 3, 1, 2))).float() / 255.0


class WorldEncoder:
    """A loaded encoder (inference only, numpy in and out)."""

    def __init__(self, net: Any, info: dict[str, Any]):
        self.net = net.eval()
        self.info = info

    @property
    def sha256(self) -> str:
        return str(self.info.get("sha256", ""))

    def describe(self) -> dict[str, Any]:
        """What a metrics report records about the encoder."""
        return {"name": self.info.get("name"), "sha256": self.sha256, "path": self.info.get("path"), "dataset": self.info.get("dataset", {}).get("digest")}

    def _run(self, fn: Callable[..., Any], *arrays: np.ndarray, batch: int = 256) -> np.ndarray:
        import torch

        n = len(arrays[0])
        outs = []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a network this small only loses to thread hand-offs
        try:
            with torch.no_grad():
                for i in range(0, n, batch):
                    outs.append(fn(*(a[i : i + batch] for a in arrays)).detach().numpy())
        finally:
            torch.set_num_threads(threads)
        return np.concatenate(outs) if outs else np.zeros((0,), dtype=np.float32)

    def shot_summary(self, frames: np.ndarray, references: dict[str, np.ndarray]) -> dict[str, Any]:
        """Everything the evaluation asks of one shot, with one pass of the trunk: the mean
        embedding (the whole-shot feature), the mean scene and species probabilities, and the
        mean presence probability of each reference image's character."""
        import torch

        keys = list(references)
        out: dict[str, Any] = {}

        def fn(f):
            m, feat = self.net.features(_to_input(f))
            cols = [feat, torch.sigmoid(self.net.scene(feat)), torch.sigmoid(self.net.species(feat))]
            for rid in keys:
                ref = _to_input(np.asarray(references[rid])).expand(len(f), -1, -1, -1)
                cols.append(torch.sigmoid(self.net.presence_logit(m, ref))[:, None])
            return torch.cat(cols, dim=1)

        rows = self._run(fn, np.asarray(frames)).astype(np.float64).mean(axis=0)
        d = self.net.scene.in_features
        out["feature"] = rows[:d]
        out["scene"] = float(rows[d])
        out["species"] = rows[d + 1 : d + 1 + len(SPECIES)]
        out["presence"] = {rid: float(v) for rid, v in zip(keys, rows[d + 1 + len(SPECIES) :])}
        return out

    def features(self, frames: np.ndarray) -> np.ndarray:
        """(N, DIM) float64 embeddings."""
        return self._run(lambda f: self.net.features(_to_input(f))[1], np.asarray(frames)).astype(np.float64)

    def presence(self, frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """(N,) probability that the reference image's character is drawn in each frame."""
        import torch

        ref = _to_input(np.asarray(reference))

        def fn(f):
            m = self.net.fmap(_to_input(f))
            return torch.sigmoid(self.net.presence_logit(m, ref.expand(len(f), -1, -1, -1)))

        return self._run(fn, np.asarray(frames)).astype(np.float64)

    def scene(self, frames: np.ndarray) -> np.ndarray:
        """(N,) probability that a frame shows a drawn scene of the world (not noise)."""
        import torch

        return self._run(lambda f: torch.sigmoid(self.net.scene(self.net.features(_to_input(f))[1]))[:, 0], np.asarray(frames)).astype(np.float64)


_CACHE: dict[tuple[str, float], WorldEncoder] = {}


def load_encoder(path: str | os.PathLike | None = None) -> WorldEncoder:
    """Load an encoder file and check it against the sha256 its lineage file records."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path).expanduser() if path else DEFAULT_ENCODER
    if not p.is_file():
        raise EncoderError(f"{p}: no such encoder file; train one with `mavin-ops encoder train` or set the evaluation config's encoder: to one")
    key = (str(p.resolve()), p.stat().st_mtime)
    if key in _CACHE:
        return _CACHE[key]
    lineage = p.with_suffix(".json")
    if not lineage.is_file():
        raise EncoderError(f"{p}: its lineage file {lineage.name} is missing; an encoder is used only with the record of how it was made")
    try:
        info = json.loads(lineage.read_text())
    except ValueError as exc:
        raise EncoderError(f"{lineage}: not valid JSON ({exc}); train the encoder again") from None
    got = sha256_file(p)
    if info.get("sha256") != got:
        raise EncoderError(f"{p}: sha256 {got[:12]}... is not the {str(info.get('sha256'))[:12]}... its lineage file records; the file changed")
    recipe = EncoderRecipe(**{k: v for k, v in (info.get("recipe") or {}).items() if k in EncoderRecipe.__dataclass_fields__})
    net = _build(recipe.width, recipe.dim)
    try:
        state = load_file(str(p))
        net.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise EncoderError(f"{p}: cannot load the encoder weights ({' '.join(str(exc).split())[:200]}); train the encoder again") from None
    info = dict(info, path=str(p))
    enc = WorldEncoder(net, info)
    _CACHE[key] = enc
    return enc


# --------------------------------------------------------------------------- metrics


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D), as FID/FVD:
    |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2)."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(sa @ sb, disp=False)
    covmean = np.real(covmean)
    return float(max(0.0, mu @ mu + np.trace(sa) + np.trace(sb) - 2.0 * np.trace(covmean)))


# --------------------------------------------------------------------------- corruptions


def shuffle_pixels(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every frame's pixels in a random order: the same colours, no shapes."""
    f = np.asarray(frames)
    n, h, w, c = f.shape
    flat = f.reshape(n, h * w, c).copy()
    for i in range(n):
        flat[i] = flat[i][rng.permutation(h * w)]
    return flat.reshape(f.shape)


def patch_noise(frames: np.ndarray, rng: np.random.Generator, patch: int = 8, sigma: float = 60.0) -> np.ndarray:
    """Each patch's mean colour plus Gaussian noise: what an untrained patch model draws."""
    f = np.asarray(frames).astype(np.float64)
    n, h, w, c = f.shape
    ph, pw = max(1, h // (SIZE // patch)), max(1, w // (SIZE // patch))
    out = np.empty_like(f)
    for y in range(0, h, ph):
        for x in range(0, w, pw):
            out[:, y : y + ph, x : x + pw] = f[:, y : y + ph, x : x + pw].mean(axis=(1, 2), keepdims=True)
    out += rng.normal(0.0, sigma, size=(1 if rng.random() < 0.5 else n, h, w, c))
    return np.clip(out, 0, 255).astype(np.uint8)


def corrupt(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the broken models' looks, chosen at random per call."""
    k = rng.integers(3)
    if k == 0:
        return shuffle_pixels(frames, rng)
    if k == 1:
        return patch_noise(frames, rng)
    return rng.integers(0, 256, size=np.asarray(frames).shape, dtype=np.uint8)


# --------------------------------------------------------------------------- stand-ins
# Models that fail in known ways, built from a benchmark clip (frames only; its script, row
# and audio are kept). The tests and bench/encoder.py check that every metric ranks them below
# the ground truth and that the gate fails them.


def _clip_rng(clip: Any) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(str(clip.id).encode()))


def static_noise(clip: Any) -> np.ndarray:
    """One random frame held for the whole clip: a model that ignores its script and its cuts
    (the untrained model's output looks like this)."""
    f = np.asarray(clip.frames)
    return np.repeat(_clip_rng(clip).integers(0, 256, size=(1, *f.shape[1:]), dtype=np.uint8), len(f), axis=0)


def colour_blocks(clip: Any) -> np.ndarray:
    """Each 8x8 patch's true mean colour plus noise: what an undertrained tiny model
    draws (right colours and cuts, no character, no texture)."""
    return patch_noise(np.asarray(clip.frames), _clip_rng(clip), sigma=20.0)


def wrong_characters(clip: Any, shots: str = "all") -> np.ndarray:
    """The ground truth with every character drawn in other colours (its RGB channels rolled
    inside its box, in every shot or only in the odd ones): the right scene and cuts, the
    wrong people. Needs the benchmark row's ``world``."""
    f = np.asarray(clip.frames).copy()
    for k, shot in enumerate(clip.row["world"]["shots"]):
        if shots == "odd" and k % 2 == 0:
            continue
        a, b = shot["frames"]
        for ch in shot["chars"]:
            x0, y0, x1, y1 = ch["box"]
            region = f[a:b, y0:y1, x0:x1]
            fg = np.abs(region.astype(np.float64) - np.asarray(shot["bg_rgb"])).sum(-1) > 60
            region[fg] = np.roll(region[fg], 1, axis=-1)
    return f


# --------------------------------------------------------------------------- training


def _training_set(root: Path | list[tuple[Path, str | None]], split: str | None = "train") -> dict[str, Any]:
    """Frames with their labels, and the reference images, of one split of a dataset (or of
    several ``(root, split)`` pairs; split None = every clip)."""
    from mavin_ops.data import media
    from mavin_ops.data.validate import read_clips

    sources = root if isinstance(root, list) else [(Path(root), split)]
    frames, species, chars, clip_of = [], [], [], []
    refs: list[np.ndarray] = []
    ref_key: list[tuple[int, str]] = []
    loaded = [(r, row) for r, sp in sources for row in read_clips(r, split=sp)]
    for ci, (root, row) in enumerate(loaded):
        clip = media.load_clip(root, row)
        world = row.get("world") or {}
        ents = world.get("entities") or {}
        for rid, img in sorted(clip.ref_images.items()):
            refs.append(_resize(img)[0])
            ref_key.append((ci, rid))
        for shot in world.get("shots", []):
            f0, f1 = shot["frames"]
            ids = [c["id"] for c in shot.get("chars", [])]
            lab = np.zeros(len(SPECIES), np.float32)
            for rid in ids:
                sp = (ents.get(rid) or {}).get("species")
                if sp in SPECIES:
                    lab[SPECIES.index(sp)] = 1.0
            small = _resize(clip.frames[f0 : min(f1, len(clip.frames))])
            for k in range(len(small)):
                frames.append(small[k])
                species.append(lab)
                chars.append(frozenset(ids))
                clip_of.append(ci)
    refs_of_clip: dict[int, list[int]] = {}
    for j, (ci, _) in enumerate(ref_key):
        refs_of_clip.setdefault(ci, []).append(j)
    return {
        "frames": np.stack(frames), "species": np.stack(species), "chars": chars, "clip": np.asarray(clip_of),
        "refs": np.stack(refs), "ref_key": ref_key, "refs_of_clip": refs_of_clip,
    }


def _pairs(data: dict[str, Any], idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A reference index and a presence label for each frame index: half positives (a role of
    the clip drawn in the frame), half negatives (another role of the clip, or another clip's)."""
    ref_idx, label = np.empty(len(idx), np.int64), np.zeros(len(idx), np.float32)
    for n, i in enumerate(idx):
        ci = int(data["clip"][i])
        own = data["refs_of_clip"].get(ci, [])
        pos = [j for j in own if data["ref_key"][j][1] in data["chars"][i]]
        neg = [j for j in own if data["ref_key"][j][1] not in data["chars"][i]]
        if pos and rng.random() < 0.5:
            ref_idx[n], label[n] = pos[rng.integers(len(pos))], 1.0
        elif neg and rng.random() < 0.5:
            ref_idx[n] = neg[rng.integers(len(neg))]
        else:
            while True:
                j = int(rng.integers(len(data["ref_key"])))
                if data["ref_key"][j][0] != ci:
                    break
            ref_idx[n] = j
    return ref_idx, label


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def presence_scores(enc: WorldEncoder, root: Path, split: str = "eval") -> dict[str, float]:
    """Recall and precision of the presence detector on a split's ground truth and its
    accuracy on corrupted frames (the numbers the lineage file records)."""
    data = _training_set(root, split)
    rng = np.random.default_rng(123)
    tp = fp = fn = 0
    noise_hits = 0
    for j, (ci, rid) in enumerate(data["ref_key"]):
        sel = np.nonzero(data["clip"] == ci)[0]
        p = enc.presence(data["frames"][sel], data["refs"][j]) >= 0.5
        truth = np.array([rid in data["chars"][i] for i in sel])
        tp += int((p & truth).sum())
        fp += int((p & ~truth).sum())
        fn += int((~p & truth).sum())
        noise_hits += int((enc.presence(corrupt(data["frames"][sel], rng), data["refs"][j]) >= 0.5).sum())
    n_frames = len(data["frames"])
    return {
        "split": split,
        "presence_recall": tp / max(1, tp + fn),
        "presence_precision": tp / max(1, tp + fp),
        "presence_on_corrupted": noise_hits / max(1, sum(int((data["clip"] == ci).sum()) for ci, _ in data["ref_key"])),
        "scene_on_truth": float((enc.scene(data["frames"]) >= 0.5).mean()),
        "scene_on_corrupted": float((enc.scene(corrupt(data["frames"], rng)) >= 0.5).mean()),
        "frames": n_frames,
    }


def train_encoder(
    data_root: str | os.PathLike,
    out: str | os.PathLike,
    recipe: EncoderRecipe | None = None,
    *,
    progress: Callable[[int, int, float], None] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Train the world encoder on ``data_root``'s training split and write ``out``
    (.safetensors) and its lineage file (``out`` with .json). Deterministic for a given
    dataset, recipe and torch build (one thread)."""
    import torch
    from safetensors.torch import save as save_bytes

    from mavin_ops.data.manifest import atomic_writer
    from mavin_ops.data.validate import read_clips

    recipe = recipe or EncoderRecipe()
    root = Path(data_root)
    out = Path(out)
    t0 = time.time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(recipe.seed)
        rng = np.random.default_rng(recipe.seed)
        with tempfile.TemporaryDirectory(prefix="mavin-encoder-worlds-") as tmp:
            from mavin_ops.data import synth

            sources: list[tuple[Path, str | None]] = [(root, "train")]
            for preset, seeds in (("tiny", recipe.world_seeds), ("debug", recipe.debug_world_seeds)):
                for seed in seeds:
                    world = Path(tmp) / f"{preset}-seed{seed}"
                    synth.generate(world, preset=preset, seed=int(seed), progress=False)
                    sources.append((world, None))
            data = _training_set(sources)
        net = _build(recipe.width, recipe.dim)
        opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=0.1)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        n = len(data["frames"])
        half = recipe.batch // 2
        loss_v = float("nan")
        for step in range(recipe.steps):
            idx = rng.integers(n, size=recipe.batch)
            ref_idx, label = _pairs(data, idx, rng)
            real = data["frames"][idx]
            fake = corrupt(real[:half], rng)
            x = _to_input(np.concatenate([real, fake]))
            m, feat = net.features(x)
            refs = _to_input(data["refs"][np.concatenate([ref_idx, ref_idx[:half]])])
            y_pres = torch.from_numpy(np.concatenate([label, np.zeros(half, np.float32)]))
            y_spec = torch.from_numpy(np.concatenate([data["species"][idx], np.zeros((half, len(SPECIES)), np.float32)]))
            y_scene = torch.cat([torch.ones(recipe.batch), torch.zeros(half)])
            loss = (
                bce(net.presence_logit(m, refs), y_pres)
                + bce(net.species(feat), y_spec)
                + bce(net.scene(feat)[:, 0], y_scene)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_v = float(loss.detach())
            if progress is not None:
                progress(step + 1, recipe.steps, loss_v)
        net.eval()
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(out.parent, out.name, "wb") as fh:
            fh.write(save_bytes({k: v.contiguous() for k, v in net.state_dict().items()}))
        sha = sha256_file(out)
        mavinset = root / "mavinset.json"
        info: dict[str, Any] = {
            "schema": "mavin-ops/encoder/v1",
            "name": out.stem,
            "sha256": sha,
            "recipe": asdict(recipe),
            "species": list(SPECIES),
            "size": SIZE,
            "dataset": {
                "path": str(root),
                "digest": sha256_file(root / "manifest.jsonl"),
                "generator": json.loads(mavinset.read_text()) if mavinset.is_file() else None,
                "split": "train",
                "extra_worlds": {"tiny": list(recipe.world_seeds), "debug": list(recipe.debug_world_seeds), "splits": "all"},
                "frames": int(n),
                "references": int(len(data["refs"])),
            },
            "final_loss": loss_v,
            "commit": _git_commit(),
            "command": command,
            "torch": torch.__version__,
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs, one torch thread",
            "train_seconds": round(time.time() - t0, 1),
        }
        enc = WorldEncoder(net, dict(info, path=str(out)))
        if read_clips(root, split="eval"):
            info["checks"] = presence_scores(enc, root, "eval")
        with atomic_writer(out.parent, out.with_suffix(".json").name) as fh:
            fh.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return info
    finally:
        torch.set_num_threads(threads)
