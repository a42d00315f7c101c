"""``mavin-ops plan``: what each training stage of a preset asks of a cluster, before anything
is submitted.

Per stage: the parameters it trains and the ones it keeps frozen (:func:`trainer.trainable_names`
on the model built on the meta device: nothing is allocated, no weight file is read), the
ZeRO stage of its recipe, DeepSpeed's own estimate of the model states per GPU for the
trained parameters (``estimate_zero2_model_states_mem_needs``: fp32 master weights, Adam
moments and gradients partitioned over every GPU, bf16 weights on each), plus the frozen
parts' bf16 weights held whole on every GPU, and the ``TrainJob`` it would submit. A stage
whose estimate passes the GPU's memory is refused. Activations are not in the estimate (they
depend on the batch, the clip length and activation checkpointing): the head room left is
what they may use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .recipes import STAGES, get_recipe
from mavin_ops.errors import MavinError

__all__ = ["PlanError", "StagePlan", "gpu_memory_gb", "plan"]

GIB = 1024**3


class PlanError(MavinError, ValueError):
    """A plan that does not fit (one line: the stage, the numbers, what to change)."""


@dataclass
class StagePlan:
    stage: str
    trainable: int
    frozen: int
    zero_stage: int
    model_states_gb: float  # DeepSpeed's estimate for the trained parameters, per GPU
    frozen_gb: float  # bf16 weights of the frozen parts, per GPU
    gpu_memory_gb: float
    trainjob: dict[str, Any] = field(default_factory=dict)

    @property
    def per_gpu_gb(self) -> float:
        return self.model_states_gb + self.frozen_gb

    @property
    def fits(self) -> bool:
        return self.per_gpu_gb <= self.gpu_memory_gb

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "trainable_params": self.trainable, "frozen_params": self.frozen, "zero_stage": self.zero_stage,
                "model_states_gb_per_gpu": round(self.model_states_gb, 2), "frozen_weights_gb_per_gpu": round(self.frozen_gb, 2),
                "per_gpu_gb": round(self.per_gpu_gb, 2), "gpu_memory_gb": self.gpu_memory_gb, "fits": self.fits, "trainjob": self.trainjob}


def gpu_memory_gb(profile_gpu: dict[str, Any] | None, default: float = 80.0) -> float:
    """The GPU memory of a cluster profile's ``gpu`` section: ``memory_gb``, else read off the
    type name (``NVIDIA-H100-80GB-HBM3`` -> 80), else ``default``."""
    gpu = profile_gpu or {}
    if gpu.get("memory_gb") is not None:
        return float(gpu["memory_gb"])
    m = re.search(r"(\d+)\s*GB", str(gpu.get("type", "")), re.I)
    return float(m.group(1)) if m else default


def _model_states_gb(trainable: int, zero_stage: int, gpus_per_node: int, nodes: int) -> float:
    """DeepSpeed's estimate of the model states per GPU for ``trainable`` parameters."""
    if zero_stage == 0:  # plain data parallel: everything on every GPU (fp32 master, 2 Adam moments, bf16 weights + grads)
        return trainable * (4 + 8 + 2 + 2) / GIB
    if zero_stage == 1:
        world = gpus_per_node * nodes
        return trainable * (2 + 2 + (4 + 8) / world) / GIB
    import contextlib
    import sys

    # DeepSpeed logs to the stdout it finds when first imported, where `plan --json` puts data.
    with contextlib.redirect_stdout(sys.stderr):
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        _, gpu_bytes = estimate_zero2_model_states_mem_needs(trainable, gpus_per_node, nodes, cpu_offload=False)
    return gpu_bytes / GIB


def plan(preset: str = "paper", nodes: int = 4, gpus_per_node: int = 8, gpu_memory: float = 80.0,
         spec: Any = None, release_id: str = "") -> list[StagePlan]:
    """Every stage of ``preset`` on ``nodes`` x ``gpus_per_node`` GPUs of ``gpu_memory`` GB."""
    from mavin_ops.model import build_model
    from mavin_ops.model import config as mconfig

    from .manifests import ClusterSpec, render_trainjob
    from .mavin_adapter import MavinAdapter
    from .trainer import trainable_names

    if nodes < 1 or gpus_per_node < 1:
        raise PlanError(f"a plan needs nodes >= 1 and gpus per node >= 1, got {nodes} x {gpus_per_node}")
    cfg = mconfig.preset(preset)
    model = build_model(cfg, device="meta", load_pretrained=False)
    adapter = MavinAdapter(preset, config=cfg)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    total = sum(sizes.values())
    spec = spec or ClusterSpec(nodes=nodes, gpus_per_node=gpus_per_node)
    out = []
    for stage in STAGES:
        recipe = get_recipe(stage, preset)
        chosen = trainable_names(model, adapter, recipe)
        trainable = sum(sizes[n] for n in chosen)
        states = _model_states_gb(trainable, recipe.zero_stage, gpus_per_node, nodes)
        frozen_gb = (total - trainable) * 2 / GIB
        out.append(StagePlan(stage, trainable, total - trainable, recipe.zero_stage, states, frozen_gb, float(gpu_memory),
                             render_trainjob(stage, preset, spec, release_id=release_id)))
    return out


def check_fits(stages: list[StagePlan]) -> None:
    """Raise :class:`PlanError` for the first stage that does not fit its GPUs."""
    for s in stages:
        if not s.fits:
            raise PlanError(
                f"stage {s.stage} needs about {s.per_gpu_gb:.1f} GB per GPU before activations ({s.model_states_gb:.1f} GB of "
                f"ZeRO-{s.zero_stage} model states for {s.trainable / 1e9:.2f}B trained parameters + {s.frozen_gb:.1f} GB of frozen "
                f"weights), more than the GPU's {s.gpu_memory_gb:g} GB; use more GPUs (--nodes) or GPUs with more memory"
            )
