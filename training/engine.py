"""DeepSpeed wiring: process group, engine config, and full-state conversion for checkpoints.

The same code runs one process on a laptop and N nodes x 8 GPUs under torchrun: gloo on CPU,
NCCL on GPU. A single process started without torchrun sets the rank variables itself
(DeepSpeed needs them even for world size 1) for the duration of the run.

Checkpoints hold *full* tensors, not DeepSpeed's per-rank pickles: :func:`gather_optimizer_state`
reassembles each trainable parameter's AdamW moments from the ZeRO 1/2 flat partitions (an
all-reduce of each rank's fragment), and :func:`load_optimizer_state` scatters them back, so a
resumed run continues with bit-identical optimizer state and loading never unpickles anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "any_rank",
    "build_engine",
    "ds_config",
    "ShardedOptimizerState",
    "gather_bytes",
    "gather_optimizer_state",
    "gather_rng_state",
    "grad_norm",
    "load_optimizer_state",
    "rank_env",
    "restore_rng_state",
    "setup_distributed",
    "shard_optimizer_state",
    "shared_token",
    "sharded",
]

_RANK_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str  # gloo | nccl
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def rank_env() -> Iterator[bool]:
    """Inside the block the rank variables exist: torchrun's, or (world size 1, started without
    torchrun) ones set here and removed again on exit, so a child process started later (a
    pipeline component, a test) never inherits a stale MASTER_PORT. Yields True when it set them."""
    if "RANK" in os.environ:
        yield False
        return
    added = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    added = {k: v for k, v in added.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield True
    finally:
        for k in added:
            os.environ.pop(k, None)


def setup_distributed() -> DistInfo:
    """Initialize the process group once (DeepSpeed's comm layer on top of torch.distributed).

    Call it inside :func:`rank_env` (DeepSpeed reads the rank variables even for world size 1).
    TORCH_EXTENSIONS_DIR defaults to ``$MAVIN_HOME/torch_extensions`` so the shared-memory op
    DeepSpeed compiles on first use is built once."""
    import deepspeed

    from mavin_ops import settings

    missing = [v for v in _RANK_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f"rank variables {', '.join(missing)} are not set; launch with torchrun or set all of {', '.join(_RANK_VARS)}")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(settings.home() / "torch_extensions"))
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    deepspeed.utils.logger.setLevel(logging.WARNING)
    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return DistInfo(torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, backend, device)


def ds_config(recipe: Any, dist: DistInfo) -> dict[str, Any]:
    """The DeepSpeed config of a recipe: micro-batch per process, ZeRO stage, clipping, and
    bf16 only on CUDA (CPU trains in fp32)."""
    bf16 = bool(recipe.bf16) and dist.device.type == "cuda"
    return {
        "train_micro_batch_size_per_gpu": int(recipe.batch),
        "gradient_accumulation_steps": int(getattr(recipe, "accum", 1)),
        "gradient_clipping": float(recipe.grad_clip),
        "zero_optimization": {"stage": int(recipe.zero_stage)},
        "bf16": {"enabled": bf16},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def build_engine(model: torch.nn.Module, trainable: Sequence[torch.nn.Parameter], recipe: Any, dist: DistInfo):
    """``deepspeed.initialize`` with AdamW over the trainable parameters only."""
    import deepspeed

    optimizer = torch.optim.AdamW(
        list(trainable), lr=recipe.lr, betas=tuple(recipe.betas), eps=recipe.eps, weight_decay=recipe.weight_decay
    )
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config(recipe, dist))
    return engine


def set_lr(engine, lr: float) -> float:
    """Set the learning rate of every parameter group of the optimizer that steps (the
    schedule lives in the recipe); returns the rate read back from it."""
    groups = _base_optimizer(engine).param_groups
    for group in groups:
        group["lr"] = lr
    return float(groups[0]["lr"])


# --------------------------------------------------------------------------- collectives


def all_reduce_mean(values: Sequence[float], dist: DistInfo) -> list[float]:
    """Mean of a few floats over ranks (loss logging)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=dist.device)
    if dist.world_size > 1:
        torch.distributed.all_reduce(t)
        t /= dist.world_size
    return t.tolist()


def any_rank(flag: bool, dist: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any rank (agree to stop together)."""
    if dist.world_size == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=dist.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _gather(t: torch.Tensor, dist: DistInfo) -> list[torch.Tensor]:
    t = t.to(dist.device)
    if dist.world_size == 1:
        return [t.cpu()]
    out = [torch.empty_like(t) for _ in range(dist.world_size)]
    torch.distributed.all_gather(out, t)
    return [o.cpu() for o in out]


# --------------------------------------------------------------------------- optimizer state


def _base_optimizer(engine) -> torch.optim.Optimizer:
    opt = engine.optimizer
    return getattr(opt, "optimizer", opt) if _flat_mode(engine) else opt


def _flat_mode(engine) -> bool:
    """ZeRO 1/2 (or DeepSpeed's bf16 optimizer): fp32 master weights and AdamW moments live
    in flat per-rank partitions reached through each parameter's ``_hp_mapping``."""
    return not isinstance(engine.optimizer, torch.optim.Optimizer)


@torch.no_grad()
def gather_optimizer_state(engine, named_trainable: Sequence[tuple[str, torch.nn.Parameter]], dist: DistInfo,
                           keys: Sequence[str] = ("exp_avg", "exp_avg_sq", "master")) -> dict[str, torch.Tensor]:
    """Full fp32 AdamW state on rank 0 (an empty dict elsewhere): ``exp_avg.<name>``,
    ``exp_avg_sq.<name>`` per trainable parameter, ``master.<name>`` (fp32 master weights,
    ZeRO 1/2) and ``step``; ``keys`` picks which of the three. Every rank must call it
    (collectives), in the same order."""
    out: dict[str, torch.Tensor] = {}
    step = 0.0
    if not _flat_mode(engine):  # plain torch optimizer: every rank holds the full state
        opt = engine.optimizer
        for name, p in named_trainable:
            st = opt.state.get(p, {})
            out[f"exp_avg.{name}"] = st["exp_avg"].detach().cpu().clone() if "exp_avg" in st else torch.zeros(p.shape)
            out[f"exp_avg_sq.{name}"] = st["exp_avg_sq"].detach().cpu().clone() if "exp_avg_sq" in st else torch.zeros(p.shape)
            if "step" in st:
                step = float(st["step"])
        out["step"] = torch.tensor([step], dtype=torch.float64)
        return out if dist.is_main else {}
    base = _base_optimizer(engine)
    flats = [g["params"][0] for g in base.param_groups]
    for flat in flats:
        st = base.state.get(flat, {})
        if "step" in st:
            step = float(st["step"])
    for name, p in named_trainable:
        mapping = getattr(p, "_hp_mapping", None)
        for key in (None if k == "master" else k for k in keys):
            # each rank writes its fragment into a zero buffer; the sum on rank 0 is the full tensor
            buf = torch.zeros(p.numel(), dtype=torch.float32, device=dist.device)
            if mapping is not None:
                flat = flats[mapping.param_group_index]
                src = flat if key is None else base.state.get(flat, {}).get(key)
                if src is not None:
                    hp = mapping.hp_fragment_address
                    lp = mapping.lp_fragment_address
                    buf.narrow(0, lp.start, lp.numel).copy_(src.narrow(0, hp.start, hp.numel))
            if dist.world_size > 1:
                torch.distributed.reduce(buf, dst=0)
            if dist.is_main:
                out[f"{key or 'master'}.{name}"] = buf.reshape(p.shape).cpu()
    out["step"] = torch.tensor([step], dtype=torch.float64)
    return out if dist.is_main else {}


@torch.no_grad()
def load_optimizer_state(
    engine, named_trainable: Sequence[tuple[str, torch.nn.Parameter]], get: Callable[[str], torch.Tensor], keys: set[str]
) -> None:
    """Put a :func:`gather_optimizer_state` result back into the engine's optimizer. ``get``
    reads one tensor by key (lazily, from the checkpoint file); each rank keeps only its own
    fragment. Raises KeyError naming a missing parameter."""

    def need(key: str) -> torch.Tensor:
        if key not in keys:
            raise KeyError(f"optimizer state has no '{key}'; the checkpoint was written for other trainable parameters")
        return get(key)

    step = float(need("step").item())
    if not _flat_mode(engine):
        opt = engine.optimizer
        for name, p in named_trainable:
            opt.state[p] = {
                "step": torch.tensor(step, dtype=torch.float32),
                "exp_avg": need(f"exp_avg.{name}").to(p.device, p.dtype).clone(),
                "exp_avg_sq": need(f"exp_avg_sq.{name}").to(p.device, p.dtype).clone(),
            }
        return
    base = _base_optimizer(engine)
    flats = [g["params"][0] for g in base.param_groups]
    for flat in flats:
        st = base.state.setdefault(flat, {})
        st["step"] = torch.tensor(step, dtype=torch.float32)
        for key in ("exp_avg", "exp_avg_sq"):
            if key not in st:
                st[key] = torch.zeros_like(flat)
    for name, p in named_trainable:
        mapping = getattr(p, "_hp_mapping", None)
        for key in ("exp_avg", "exp_avg_sq", "master"):
            full = need(f"{key}.{name}")
            if mapping is None:
                continue
            flat = flats[mapping.param_group_index]
            hp, lp = mapping.hp_fragment_address, mapping.lp_fragment_address
            src = full.reshape(-1).narrow(0, lp.start, lp.numel)
            dst = flat if key == "master" else base.state[flat][key]
            dst.narrow(0, hp.start, hp.numel).copy_(src.to(dst.device, dst.dtype))


def grad_norm(engine, named_trainable: Sequence[tuple[str, torch.nn.Parameter]], after_step: bool) -> float | None:
    """The global gradient norm of the step: ZeRO 1/2 report it after ``engine.step()``; with
    a plain optimizer it is computed from the gradients before the step (pass
    ``after_step=False`` then). None when not available at this point."""
    if _flat_mode(engine):
        if not after_step:
            return None
        value = engine.get_global_grad_norm()
        return None if value is None else float(value)
    if after_step:
        return None
    sq = [p.grad.detach().float().pow(2).sum() for _, p in named_trainable if p.grad is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0


def gather_bytes(data: bytes, dist: DistInfo) -> list[bytes]:
    """Every rank's ``data``, rank by rank, on every rank (small things: digests, manifest
    entries; no pickle)."""
    if dist.world_size == 1:
        return [data]
    sizes = [int(t.item()) for t in _gather(torch.tensor([len(data)], dtype=torch.int64), dist)]
    padded = torch.zeros(max(sizes), dtype=torch.uint8)
    padded[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else padded[:0]
    return [bytes(t[:n].tolist()) for t, n in zip(_gather(padded, dist), sizes)]


def shared_token(dist: DistInfo) -> str:
    """A random token rank 0 draws and every rank receives (names a checkpoint's shared
    temporary folder)."""
    import uuid

    return gather_bytes(uuid.uuid4().hex[:12].encode(), dist)[0].decode()


def rank_digests(named_trainable: Sequence[tuple[str, torch.nn.Parameter]], dist: DistInfo) -> list[str]:
    """The sha256 of the trained parameters as each rank holds them, rank by rank (data
    parallelism means they are equal; a checkpoint records it)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(named_trainable, key=lambda x: x[0]):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return [d.decode() for d in gather_bytes(h.hexdigest().encode(), dist)]


def sharded(engine, dist: DistInfo) -> bool:
    """Whether checkpoints are written in the sharded form: each of several ranks holds only
    its ZeRO 1/2 partition of the optimizer state and writes just that."""
    return dist.world_size > 1 and _flat_mode(engine)


@torch.no_grad()
def shard_optimizer_state(engine, named_trainable: Sequence[tuple[str, torch.nn.Parameter]]) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """This rank's own part of the fp32 AdamW state (ZeRO 1/2), no collective: for every
    trainable parameter whose flattened elements [start, start + n) this rank's partition
    holds, those elements of its master weights and moments (``master.<name>``,
    ``exp_avg.<name>``, ``exp_avg_sq.<name>``) and ``index[name] = [start, n]``; plus
    ``step``. :class:`ShardedOptimizerState` puts the parts of any number of ranks together."""
    base = _base_optimizer(engine)
    flats = [g["params"][0] for g in base.param_groups]
    step = max((float(base.state.get(f, {}).get("step", 0.0)) for f in flats), default=0.0)
    tensors: dict[str, torch.Tensor] = {"step": torch.tensor([step], dtype=torch.float64)}
    index: dict[str, list[int]] = {}
    for name, p in named_trainable:
        mapping = getattr(p, "_hp_mapping", None)
        if mapping is None or mapping.lp_fragment_address.numel == 0:
            continue
        flat = flats[mapping.param_group_index]
        hp, lp = mapping.hp_fragment_address, mapping.lp_fragment_address
        index[name] = [int(lp.start), int(lp.numel)]
        tensors[f"master.{name}"] = flat.narrow(0, hp.start, hp.numel).float().cpu().clone()
        for key in ("exp_avg", "exp_avg_sq"):
            src = base.state.get(flat, {}).get(key)
            part = src.narrow(0, hp.start, hp.numel) if src is not None else torch.zeros(hp.numel)
            tensors[f"{key}.{name}"] = part.float().cpu().clone()
    return tensors, index


class ShardedOptimizerState:
    """Full optimizer tensors put together from the per-rank files of a sharded checkpoint,
    one key at a time (``get``/``keys``, the reader :func:`load_optimizer_state` takes), for
    any world size. ``shards``: (index, reader) per rank file, where ``index[name] = [start,
    n]`` says the file holds the flattened elements [start, start + n) of parameter ``name``;
    ``shapes``: parameter name -> shape.

    Nothing a file says is trusted: every fragment must lie inside its parameter (0 <= start,
    start + n <= numel), the fragments of a parameter must cover each of its elements exactly
    once (checked on the index, before any tensor is read), and each tensor's declared shape
    must hold exactly n elements (checked on the file's header, before the tensor is read). A
    lie is a ValueError that names the file's rank, the parameter and what is wrong."""

    def __init__(self, shards: Sequence[tuple[dict[str, list[int]], Any]], shapes: dict[str, Sequence[int]], where: str = "checkpoint"):
        self.shards, self.shapes, self.where = list(shards), dict(shapes), where
        self._numel = {n: int(torch.Size(s).numel()) for n, s in self.shapes.items()}
        masks: dict[str, torch.Tensor] = {}
        for rank, (idx, _) in enumerate(self.shards):
            if not isinstance(idx, dict):
                raise ValueError(f"{where}: rank {rank}'s file has an index that is not a mapping of parameter to [start, n]")
            for name, frag in idx.items():
                if name not in self._numel:
                    raise ValueError(f"{where}: rank {rank}'s file holds '{name}', which this run does not train")
                if not (isinstance(frag, list) and len(frag) == 2 and all(type(v) is int for v in frag)):
                    raise ValueError(f"{where}: rank {rank}'s index entry for '{name}' is {str(frag)[:40]}, not [start, n] in whole numbers")
                start, n, numel = frag[0], frag[1], self._numel[name]
                if start < 0 or n < 1 or start + n > numel:
                    raise ValueError(f"{where}: rank {rank}'s fragment [{start}, {start} + {n}) of '{name}' is not inside its {numel} elements")
                mask = masks.setdefault(name, torch.zeros(numel, dtype=torch.int32))
                mask[start : start + n] += 1
        for name, mask in masks.items():
            if int(mask.max()) > 1:
                raise ValueError(f"{where}: the rank files' fragments of '{name}' overlap ({int((mask > 1).sum())} elements held twice)")
            if int(mask.min()) < 1:
                raise ValueError(f"{where}: the rank files hold {int((mask > 0).sum())} of {mask.numel()} elements of '{name}'; "
                                 "a rank's file is missing or from another run")
        self._keys = {"step"} | {f"{k}.{n}" for n in masks for k in ("master", "exp_avg", "exp_avg_sq")}

    def keys(self) -> set[str]:
        return set(self._keys)

    def get(self, key: str) -> torch.Tensor:
        if key == "step":
            step = self.shards[0][1].get_tensor("step")
            if step.numel() != 1 or not step.dtype.is_floating_point:
                raise ValueError(f"{self.where}: rank 0's 'step' is {list(step.shape)} {step.dtype}, not one number")
            return step
        name = key.split(".", 1)[1]
        full = torch.zeros(self._numel[name], dtype=torch.float32)
        for rank, (idx, reader) in enumerate(self.shards):
            if name in idx:
                start, n = idx[name]
                declared = reader.get_slice(key).get_shape() if hasattr(reader, "get_slice") else None
                if declared is not None and int(torch.Size(declared).numel()) != n:
                    raise ValueError(f"{self.where}: rank {rank}'s '{key}' is declared {list(declared)[:4]} where its index says {n} elements")
                part = reader.get_tensor(key)
                if part.dtype != torch.float32:  # what shard_optimizer_state writes; anything else is cast silently
                    raise ValueError(f"{self.where}: rank {rank}'s '{key}' is {part.dtype}, not float32")
                if part.numel() != n:
                    raise ValueError(f"{self.where}: rank {rank}'s '{key}' holds {part.numel()} elements where its index says {n}")
                full[start : start + n] = part.reshape(-1)
        return full.reshape(self.shapes[name])


# --------------------------------------------------------------------------- RNG


def _python_state_tensor() -> tuple[torch.Tensor, torch.Tensor]:
    import random

    version, internal, gauss = random.getstate()
    return torch.tensor([version, *internal, 0 if gauss is None else 1], dtype=torch.int64), torch.tensor(
        [0.0 if gauss is None else gauss], dtype=torch.float64
    )


def gather_rng_state(dist: DistInfo) -> dict[str, torch.Tensor]:
    """Every rank's RNG states (torch CPU and CUDA, numpy's and Python's global generators)
    as tensors ``<kind>.rank<r>``, identical on every rank."""
    import numpy as np

    mine: dict[str, torch.Tensor] = {"torch_cpu": torch.get_rng_state()}
    if dist.device.type == "cuda":
        mine["torch_cuda"] = torch.cuda.get_rng_state(dist.device)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    mine["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    mine["numpy_meta"] = torch.tensor([float(pos), float(has_gauss), float(cached)], dtype=torch.float64)
    mine["python_state"], mine["python_gauss"] = _python_state_tensor()
    out: dict[str, torch.Tensor] = {}
    for key, t in mine.items():
        for r, g in enumerate(_gather(t, dist)):
            out[f"{key}.rank{r}"] = g
    return out


def restore_rng_state(state: dict[str, torch.Tensor], dist: DistInfo) -> bool:
    """Restore this rank's RNG states; False (nothing restored) when the checkpoint was
    written with another world size and has no entry for this rank."""
    import random

    import numpy as np

    r = dist.rank
    if f"torch_cpu.rank{r}" not in state:
        return False
    torch.set_rng_state(state[f"torch_cpu.rank{r}"].to(torch.uint8))
    if dist.device.type == "cuda" and f"torch_cuda.rank{r}" in state:
        torch.cuda.set_rng_state(state[f"torch_cuda.rank{r}"].to(torch.uint8), dist.device)
    meta = state[f"numpy_meta.rank{r}"].tolist()
    np.random.set_state(("MT19937", state[f"numpy_keys.rank{r}"].numpy().astype(np.uint32), int(meta[0]), int(meta[1]), float(meta[2])))
    py = state[f"python_state.rank{r}"].tolist()
    gauss = state[f"python_gauss.rank{r}"].item() if py[-1] else None
    random.setstate((py[0], tuple(py[1:-1]), gauss))
    return True
