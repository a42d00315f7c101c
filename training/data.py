"""The training data path: precomputed latents, a torch Dataset over them, and the batch schedule.

1. :func:`precompute` turns every training clip of a dataset version (of a validated
   dataset, only the clips validation kept: see data/validate.py, ``read_clips``) into what the model
   trains on (whatever the model adapter's ``encode_clip`` returns: for the project's model
   the video and audio latents and the reference media, with the MTSS script in the
   metadata) once, and writes one safetensors file per clip plus an ``index.json``. The cache is keyed by the dataset digest and the encoder fingerprint, so a
   changed dataset or encoder never reuses stale latents. Training never decodes media.
2. :class:`LatentDataset` reads that folder (safetensors only: nothing is unpickled).
3. :class:`BatchSchedule` decides which clips form the batch of every (step, rank): clips are
   bucketed by (frame count, shot count) so a batch never mixes lengths, buckets are shuffled
   per epoch from the seed, and a mixture of subsets is interleaved by a smooth weighted
   round robin. The schedule is a pure function of (seed, step, rank), which is what lets a
   resumed run read exactly the batches an uninterrupted run would have read.

The precompute step is also a DVC stage (``python -m mavin_ops.training precompute ...``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from mavin_ops import settings
from mavin_ops.data import manifest as _manifest
from mavin_ops.errors import MavinError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .adapter import ModelAdapter

__all__ = [
    "INDEX",
    "DataError",
    "LatentDataset",
    "LatentIndex",
    "Record",
    "BatchSchedule",
    "StepBatchSampler",
    "clip_subsets",
    "dataset_digest",
    "default_cache_dir",
    "precompute",
    "read_index",
]

INDEX = "index.json"
INDEX_FORMAT = 1


class DataError(MavinError, RuntimeError):
    """The training data cannot be used: the message names the file or clip and what to do."""


@dataclass
class Record:
    """One precomputed clip: named tensors and JSON metadata (clip id, frames, shots, spans)."""

    id: str
    tensors: dict[str, "torch.Tensor"]
    meta: dict[str, Any]


@dataclass(frozen=True)
class LatentIndex:
    """A precomputed dataset folder: where it is and what each clip file holds.

    ``manifest_digest`` (sha256 of the dataset's manifest, which holds the sha256 of every
    media file) is the cache key; ``dataset_digest`` is the version's DVC digest when the
    caller knew it (else the same manifest digest), kept for lineage."""

    root: Path
    dataset_digest: str
    encoder: str  # encoder fingerprint
    adapter: str
    split: str
    clips: tuple[dict[str, Any], ...]
    manifest_digest: str = ""

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def digest(self) -> str:
        """sha256 of the index file: names exactly which latents a run read."""
        return _manifest.sha256_file(self.root / INDEX)


def dataset_digest(root: str | os.PathLike) -> str:
    """A content digest of a dataset directory when no DVC digest is known: the sha256 of its
    manifest, which itself holds the sha256 of every media file."""
    path = Path(root) / _manifest.MANIFEST
    if not path.is_file():
        raise DataError(f"{path} does not exist; point --dataset at a dataset directory (manifest.jsonl + media)")
    return "sha256:" + _manifest.sha256_file(path)


def default_cache_dir(digest: str, encoder: str) -> Path:
    """``$MAVIN_HOME/latents/<manifest digest>-<encoder>``: one folder per (data, encoder) pair."""
    safe = digest.replace("sha256:", "").replace(".dir", "")[:16]
    return settings.home() / "latents" / f"{safe}-{encoder[:12]}"


def clip_subsets(meta: dict[str, Any]) -> list[str]:
    """The named subsets (recipes.SUBSETS) a clip belongs to, from its precomputed metadata."""
    out = ["all"]
    if meta.get("n_custom_roles", 0) > 0:
        out.append("identity")
    if meta.get("n_shots", 1) >= 2:
        out.append("multishot")
    if meta.get("n_dialogue", 0) > 0:
        out.append("dialogue")
    return out


def _script_facts(row: dict[str, Any]) -> dict[str, Any]:
    script = row.get("script") or {}
    refs = [r for r in script.get("reference") or [] if isinstance(r, dict)]
    events = [e for e in script.get("event") or [] if isinstance(e, dict)]
    return {
        "n_shots": len(script.get("shot") or []),
        "n_custom_roles": sum(1 for r in refs if r.get("reference_image") or r.get("reference_audio")),
        "n_dialogue": sum(1 for e in events if e.get("type") == "dialogue"),
    }


def _fsync_write(path: Path, data: bytes) -> None:
    from mavin_ops.data.manifest import atomic_writer

    with atomic_writer(path.parent, path.name, "wb") as fh:
        fh.write(data)


def read_index(root: str | os.PathLike) -> LatentIndex:
    """Read a precomputed folder's ``index.json`` (a path, or the ``mavin-home:/`` reference a
    run's ``latents_index`` param holds)."""
    root = settings.local_path(root)
    path = root / INDEX
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; run the precompute step first (python -m mavin_ops.training precompute)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON (line {exc.lineno}); delete the folder and precompute again") from None
    if data.get("format") != INDEX_FORMAT:
        raise DataError(f"{path} has format {data.get('format')!r}, this code reads {INDEX_FORMAT}; precompute again")
    return LatentIndex(
        root=root,
        dataset_digest=data["dataset_digest"],
        encoder=data["encoder"],
        adapter=data["adapter"],
        split=data["split"],
        clips=tuple(data["clips"]),
        manifest_digest=data.get("manifest_digest", ""),
    )


def precompute(
    dataset: str | os.PathLike,
    adapter: "ModelAdapter",
    out_dir: str | os.PathLike | None = None,
    *,
    digest: str | None = None,
    split: str = "train",
    progress: Callable[[str], None] | None = None,
) -> LatentIndex:
    """Encode every ``split`` clip of the dataset at ``dataset`` once; return the index.

    The cache key is the manifest's sha256 (it pins every media file) and the encoder
    fingerprint; ``digest`` (the version's DVC digest, when known) is recorded for lineage.
    Re-running with the same data and encoder returns the existing index at once; a folder
    left by an interrupted run is completed (clip files already written for this encoder are
    kept); a folder written for other data or another encoder is replaced. Clip files are
    written atomically and the index last."""
    from safetensors.numpy import save as st_save

    from mavin_ops.data import media

    dataset = Path(dataset)
    content = dataset_digest(dataset)
    digest = digest or content
    encoder = adapter.encoder_fingerprint()
    out = Path(out_dir) if out_dir else default_cache_dir(content, encoder)
    # Read (and so check) the manifest before any cache answers: a validated dataset whose
    # manifest was swapped is refused even when latents for that manifest exist somewhere.
    rows = _read_rows(dataset, split)
    index_path = out / INDEX
    if index_path.is_file():
        try:
            idx = read_index(out)
        except DataError:
            idx = None
        if idx is not None and idx.manifest_digest == content and idx.encoder == encoder and idx.split == split:
            return idx
        # stale: another dataset or encoder wrote this folder
        shutil.rmtree(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)

    if not rows:
        raise DataError(f"{dataset / _manifest.MANIFEST} has no clip with split '{split}'; nothing to train on")

    clips: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    from mavin_ops import progress as _progress

    report = _progress.reporter("precompute latents", len(rows), "clip")
    for i, row in enumerate(rows):
        report.update(1)
        cid = str(row["id"])
        rel = f"clips/{cid}.safetensors"
        path = out / rel
        meta = _existing_meta(path, encoder)
        if meta is None:
            clip = media.load_clip(dataset, row)
            tensors, extra = adapter.encode_clip(clip)
            meta = {
                "id": cid,
                "encoder": encoder,
                "num_frames": int(row.get("num_frames", clip.num_frames)),
                "fps": int(row.get("fps", clip.fps)),
                **_script_facts(row),
                **extra,
            }
            arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
            _fsync_write(path, st_save(arrays, metadata={"meta": json.dumps(meta, sort_keys=True)}))
        clips.append(
            {
                "id": cid,
                "file": rel,
                "sha256": _manifest.sha256_file(path),
                "num_frames": meta["num_frames"],
                "n_shots": meta["n_shots"],
                "subsets": clip_subsets(meta),
            }
        )
        if progress and (i + 1) % 50 == 0:
            progress(f"precompute: {i + 1}/{len(rows)} clips ({time.perf_counter() - t0:.1f} s)")
    report.close()
    index = {
        "format": INDEX_FORMAT,
        "dataset_digest": digest,
        "manifest_digest": content,
        "encoder": encoder,
        "adapter": adapter.name,
        "split": split,
        "dataset_path": settings.portable(dataset.resolve()),  # relative to a movable home
        "clips": clips,
    }
    _fsync_write(index_path, json.dumps(index, indent=1, sort_keys=True).encode())
    return read_index(out)


def _read_rows(dataset: Path, split: str) -> list[dict[str, Any]]:
    """The ``split`` rows of the dataset through the loader every step after validation shares
    (data/validate.py: :func:`read_clips`): of a validated dataset, only the validated clips."""
    from mavin_ops.data.validate import DatasetError, read_clips

    try:
        return read_clips(dataset, split=split, what="training dataset")
    except DatasetError as exc:
        raise DataError(str(exc)) from None


def _existing_meta(path: Path, encoder: str) -> dict[str, Any] | None:
    """The metadata of an already-written clip file for this encoder, else None."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta = json.loads((fh.metadata() or {}).get("meta", "{}"))
    except Exception:
        return None
    return meta if meta.get("encoder") == encoder else None


class LatentDataset:
    """A torch-style map Dataset over a precomputed folder: ``ds[i]`` is a :class:`Record`.

    Files are read with safetensors (no pickle) and their sha256 checked against the index on
    first read; with ``cache`` (the default) records stay in memory after the first read."""

    def __init__(self, index: LatentIndex | str | os.PathLike, cache: bool = True, verify: bool = True):
        self.index = index if isinstance(index, LatentIndex) else read_index(index)
        self.cache = cache
        self.verify = verify
        self._records: dict[int, Record] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Record:
        if i in self._records:
            return self._records[i]
        from safetensors import safe_open
        from safetensors.torch import load as st_load

        entry = self.index.clips[i]
        path = self.index.root / entry["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path} is missing; precompute the dataset again") from None
        if self.verify and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise DataError(f"{path} does not match its sha256 in {self.index.root / INDEX}; precompute the dataset again")
        tensors = st_load(data)
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("meta", "{}"))
        rec = Record(id=entry["id"], tensors=tensors, meta=meta)
        if self.cache:
            self._records[i] = rec
        return rec


@dataclass
class _Stream:
    """The endless batch sequence of one subset: bucketed, shuffled per epoch."""

    members: list[int]
    keys: list[tuple[int, int]]
    batch: int
    seed: int
    salt: int
    batches: list[list[int]] = field(default_factory=list)
    epoch: int = 0

    def get(self, k: int) -> list[int]:
        while len(self.batches) <= k:
            self._extend()
        return self.batches[k]

    def _extend(self) -> None:
        rng = np.random.default_rng([self.seed, self.salt, self.epoch])
        buckets: dict[tuple[int, int], list[int]] = {}
        for m, key in zip(self.members, self.keys):
            buckets.setdefault(key, []).append(m)
        epoch_batches: list[list[int]] = []
        for key in sorted(buckets):
            b = list(buckets[key])
            order = rng.permutation(len(b))
            b = [b[j] for j in order]
            epoch_batches.extend(b[j : j + self.batch] for j in range(0, len(b), self.batch))
        order = rng.permutation(len(epoch_batches))
        self.batches.extend(epoch_batches[j] for j in order)
        self.epoch += 1


class BatchSchedule:
    """Which clips (indices into the index) form the micro-batch of every (step, rank).

    ``mixture`` is a recipe's ((subset, weight), ...). Global batch g = step * world_size +
    rank; which subset serves g follows a smooth weighted round robin over the weights (a
    deterministic interleave: weights 1:1:1 give A B C A B C ...), and the k-th batch a subset
    serves is the k-th batch of that subset's endless bucketed stream."""

    def __init__(
        self,
        index: LatentIndex,
        mixture: Sequence[tuple[str, float]],
        batch: int,
        seed: int,
        world_size: int = 1,
        bucket_key: Callable[[dict[str, Any]], tuple[int, int]] | None = None,
    ):
        self.world_size = world_size
        key_fn = bucket_key or (lambda c: (int(c["num_frames"]), int(c["n_shots"])))
        self.streams: list[_Stream] = []
        self.weights: list[float] = []
        self.names: list[str] = []
        for salt, (subset, weight) in enumerate(mixture):
            members = [i for i, c in enumerate(index.clips) if subset in c["subsets"]]
            if not members:
                raise DataError(
                    f"no training clip in {index.root / INDEX} belongs to subset '{subset}'; "
                    "generate a dataset with such clips or change the recipe's mixture"
                )
            keys = [key_fn(index.clips[i]) for i in members]
            self.streams.append(_Stream(members, keys, batch, seed, salt))
            self.weights.append(float(weight))
            self.names.append(subset)
        self._plan: list[tuple[int, int]] = []  # global batch -> (stream, k)
        self._served = [0] * len(self.streams)
        self._credit = [0.0] * len(self.streams)

    def _grow(self, upto: int) -> None:
        total = sum(self.weights)
        while len(self._plan) <= upto:
            for j, w in enumerate(self.weights):
                self._credit[j] += w
            j = max(range(len(self.weights)), key=lambda s: (self._credit[s], -s))
            self._credit[j] -= total
            self._plan.append((j, self._served[j]))
            self._served[j] += 1

    def subset_of(self, step: int, rank: int = 0) -> str:
        g = step * self.world_size + rank
        self._grow(g)
        return self.names[self._plan[g][0]]

    def micro_index(self, step: int, rank: int = 0, micro: int = 0, accum: int = 1) -> int:
        """The global micro-batch number of (step, micro-batch ``micro`` of ``accum``, rank):
        ``(step * accum + micro) * world_size + rank``. The same number whatever the split
        between processes and accumulation, so the same clips (and the same noise) go into
        an optimizer step either way."""
        return (step * accum + micro) * self.world_size + rank

    def batch(self, step: int, rank: int = 0, micro: int = 0, accum: int = 1) -> list[int]:
        """Clip indices of the micro-batch for 0-based ``step`` on ``rank`` (micro-batch
        ``micro`` of ``accum`` within the step)."""
        g = self.micro_index(step, rank, micro, accum)
        self._grow(g)
        j, k = self._plan[g]
        return list(self.streams[j].get(k))


class StepBatchSampler:
    """A torch batch sampler that yields this rank's micro-batches for steps [start, stop),
    ``accum`` per step."""

    def __init__(self, schedule: BatchSchedule, rank: int, start: int, stop: int, accum: int = 1):
        self.schedule, self.rank, self.start, self.stop, self.accum = schedule, rank, start, stop, accum

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            for micro in range(self.accum):
                yield self.schedule.batch(step, self.rank, micro, self.accum)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.accum
