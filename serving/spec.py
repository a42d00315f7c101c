"""One description of the served models, rendered to Triton ``config.pbtxt`` files.

A :class:`RepositorySpec` names every model Triton serves for one exported MAVIN model, with
its inputs and outputs, batching, instances and warmup. Two *variants* of the model
repository come from the same description, so they cannot drift apart:

- ``onnxruntime``: the encoder, the denoiser step and the decoders are ONNX Runtime models
  (``platform: "onnxruntime_onnx"``), as a full Triton image serves them;
- ``python``: the same ONNX files run through ``onnxruntime`` inside Python-backend models
  (the ``tritonserver`` shipped in the nvidia-pytriton wheel has only the Python backend).

In both, ``mavin_generate`` is a Python-backend model that takes an MTSS script (plus optional
reference media), runs the Euler sampling loop with guidance by calling ``denoiser`` through
BLS, decodes with ``video_decoder`` / ``audio_decoder`` and returns frames and the waveform.

Only the ``backend``/``platform`` lines and a few backend parameters differ between variants;
:func:`io_signature` is what a test compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from mavin_ops.model.config import ModelConfig

__all__ = [
    "DTYPES",
    "ENTRY_MODEL",
    "PART_MODELS",
    "VARIANTS",
    "ModelSpec",
    "RepositorySpec",
    "ServingLimits",
    "TensorSpec",
    "describe",
    "io_signature",
    "parse_config",
    "render_config",
]

VARIANTS = ("onnxruntime", "python")
ENTRY_MODEL = "mavin_generate"
PART_MODELS = ("text_encoder", "denoiser", "video_decoder", "audio_decoder")

#: numpy dtype name -> (Triton config enum name, Triton wire datatype)
DTYPES: dict[str, tuple[str, str]] = {
    "float32": ("TYPE_FP32", "FP32"),
    "int64": ("TYPE_INT64", "INT64"),
    "int32": ("TYPE_INT32", "INT32"),
    "bool": ("TYPE_BOOL", "BOOL"),
    "uint8": ("TYPE_UINT8", "UINT8"),
    "bytes": ("TYPE_STRING", "BYTES"),
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``dims`` exclude the batch dimension when the model batches;
    -1 is a dynamic axis. ``reshape`` is the shape the model sees (Triton ``reshape``), used
    for a per-item scalar such as the flow time ``t``."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False
    reshape: tuple[int, ...] | None = None

    @property
    def wire_dtype(self) -> str:
        return DTYPES[self.dtype][1]


@dataclass(frozen=True)
class ModelSpec:
    """One served model. ``kind`` is ``onnx`` (an exported graph, file ``onnx_file``) or
    ``sampler`` (the Python-backend BLS model)."""

    name: str
    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    dynamic_batching: bool = False
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    instances: int = 1
    onnx_file: str = ""
    warmup: dict[str, tuple[int, ...]] | None = None  # input -> concrete dims (batch 1)
    parameters: dict[str, str] = field(default_factory=dict)

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f"model {self.name} has no input '{name}'")


@dataclass(frozen=True)
class ServingLimits:
    """What one ``mavin_generate`` request may ask for; larger requests are refused with a
    4xx-class error before any inference. ``None`` fields take a value from the model config."""

    max_script_bytes: int = 64 * 1024
    max_duration_s: float = 16.0
    max_steps: int = 200
    max_reference_side: int | None = None  # default: twice the configured frame side
    max_reference_audio_s: float = 30.0
    max_video_tokens: int = 32768
    max_customized_roles: int | None = None  # default: denoiser.max_roles

    def resolved(self, config: "ModelConfig") -> "ServingLimits":
        side = self.max_reference_side or 2 * max(config.video_codec.height, config.video_codec.width)
        roles = self.max_customized_roles if self.max_customized_roles is not None else config.denoiser.max_roles
        return replace(self, max_reference_side=side, max_customized_roles=min(roles, config.denoiser.max_roles))

    def to_parameters(self) -> dict[str, str]:
        return {f"limit.{k}": str(v) for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> "ServingLimits":
        kwargs: dict[str, Any] = {}
        for name, default in cls().__dict__.items():
            raw = params.get(f"limit.{name}")
            if raw is None:
                continue
            kind = float if isinstance(default, float) or name.endswith("_s") else int
            kwargs[name] = kind(raw)
        return cls(**kwargs)


@dataclass(frozen=True)
class RepositorySpec:
    """Every model of one served MAVIN model, at one version."""

    version: int
    models: tuple[ModelSpec, ...]
    limits: ServingLimits

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"the repository has no model '{name}'; it has {', '.join(m.name for m in self.models)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)


def _t(name: str, dtype: str, *dims: int, optional: bool = False, reshape: tuple[int, ...] | None = None) -> TensorSpec:
    return TensorSpec(name, dtype, tuple(dims), optional, reshape)


def describe(
    config: "ModelConfig",
    *,
    version: int = 1,
    max_batch_size: int = 8,
    dynamic_batching: bool = True,
    max_queue_delay_us: int = 0,
    instances: int = 1,
    sampler_instances: int = 1,
    ort_threads: int = 1,
    limits: ServingLimits | None = None,
) -> RepositorySpec:
    """The served models of a model with ``config``. ``max_batch_size`` must be at least 2:
    classifier-free guidance sends the conditional and the null branch as one batch."""
    if version < 1:
        raise ValueError(f"repository version must be >= 1, got {version}")
    if max_batch_size < 2:
        raise ValueError(f"max_batch_size must be >= 2 (guidance batches two branches), got {max_batch_size}")
    lim = (limits or ServingLimits()).resolved(config)
    Dv, Da, Dt = config.video_token_dim, config.audio_token_dim, config.text.width
    Cv, Ca = config.video_codec.channels, config.audio_codec.channels
    batching = dict(
        max_batch_size=max_batch_size,
        dynamic_batching=dynamic_batching,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        parameters={"intra_op_threads": str(ort_threads)},
    )
    text_encoder = ModelSpec(
        "text_encoder",
        "onnx",
        inputs=(_t("ids", "int64", -1), _t("segment", "int64", -1), _t("position", "int64", -1)),
        outputs=(_t("text", "float32", -1, Dt),),
        onnx_file="text_encoder.onnx",
        warmup={"ids": (8,), "segment": (8,), "position": (8,)},
        **batching,
    )
    denoiser = ModelSpec(
        "denoiser",
        "onnx",
        inputs=(
            _t("video", "float32", -1, Dv),
            _t("audio", "float32", -1, Da),
            _t("text", "float32", -1, Dt),
            _t("t", "float32", 1, reshape=()),
            _t("video_pos", "float32", -1, 3),
            _t("audio_pos", "float32", -1, 1),
            _t("video_role", "int64", -1),
            _t("audio_role", "int64", -1),
            _t("video_self_mask", "bool", -1, -1),
            _t("audio_self_mask", "bool", -1, -1),
            _t("video_text_mask", "bool", -1, -1),
            _t("audio_text_mask", "bool", -1, -1),
            _t("av_mask", "bool", -1, -1),
        ),
        outputs=(_t("video_velocity", "float32", -1, Dv), _t("audio_velocity", "float32", -1, Da)),
        onnx_file="denoiser.onnx",
        warmup={
            "video": (8, Dv),
            "audio": (4, Da),
            "text": (4, Dt),
            "t": (1,),
            "video_pos": (8, 3),
            "audio_pos": (4, 1),
            "video_role": (8,),
            "audio_role": (4,),
            "video_self_mask": (8, 8),
            "audio_self_mask": (4, 4),
            "video_text_mask": (8, 4),
            "audio_text_mask": (4, 4),
            "av_mask": (8, 4),
        },
        **batching,
    )
    video_decoder = ModelSpec(
        "video_decoder",
        "onnx",
        inputs=(_t("latent", "float32", Cv, -1, -1, -1),),
        outputs=(_t("frames", "float32", -1, -1, -1, 3),),
        onnx_file="video_decoder.onnx",
        warmup={"latent": (Cv, 2, 2, 2)},
        **batching,
    )
    audio_decoder = ModelSpec(
        "audio_decoder",
        "onnx",
        inputs=(_t("latent", "float32", -1, Ca),),
        outputs=(_t("waveform", "float32", -1),),
        onnx_file="audio_decoder.onnx",
        warmup={"latent": (4, Ca)},
        **batching,
    )
    sampler = ModelSpec(
        ENTRY_MODEL,
        "sampler",
        inputs=(
            _t("script", "bytes", 1),
            _t("seed", "int64", 1, optional=True),
            _t("steps", "int32", 1, optional=True),
            _t("guidance", "float32", 1, optional=True),
            _t("reference_ids", "bytes", -1, optional=True),
            _t("reference_images", "uint8", -1, -1, -1, 3, optional=True),
            _t("reference_audio", "float32", -1, -1, optional=True),
            _t("reference_audio_samples", "int32", -1, optional=True),
        ),
        outputs=(
            _t("frames", "uint8", -1, -1, -1, 3),
            _t("audio", "float32", -1),
            _t("fps", "float32", 1),
            _t("sample_rate", "int32", 1),
            _t("clip_id", "bytes", 1),
        ),
        max_batch_size=0,
        instances=sampler_instances,
        parameters={
            **lim.to_parameters(),
            "torch_threads": str(ort_threads),
            "default_steps": str(config.flow.sample_steps),
            "default_guidance": str(config.flow.guidance),
            "fps": str(config.video_codec.fps),
            "sample_rate": str(config.audio_codec.sample_rate),
            "frame_size": f"{config.video_codec.height}x{config.video_codec.width}",
        },
    )
    return RepositorySpec(version, (text_encoder, denoiser, video_decoder, audio_decoder, sampler), lim)


# --------------------------------------------------------------------------- rendering


def _config_pb():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def render_config(model: ModelSpec, variant: str) -> str:
    """``config.pbtxt`` text for ``model`` in ``variant`` (``onnxruntime`` | ``python``)."""
    from google.protobuf import text_format

    if variant not in VARIANTS:
        raise ValueError(f"unknown repository variant '{variant}'; use one of {', '.join(VARIANTS)}")
    pb = _config_pb()
    cfg = pb.ModelConfig(name=model.name, max_batch_size=model.max_batch_size)
    if model.kind == "onnx" and variant == "onnxruntime":
        cfg.platform = "onnxruntime_onnx"
        cfg.default_model_filename = "model.onnx"
    else:
        cfg.backend = "python"
    for t in model.inputs:
        _tensor(pb, cfg.input.add(), t, is_input=True)
    for t in model.outputs:
        _tensor(pb, cfg.output.add(), t, is_input=False)
    if model.dynamic_batching and model.max_batch_size > 0:
        cfg.dynamic_batching.max_queue_delay_microseconds = model.max_queue_delay_us
        cfg.dynamic_batching.preferred_batch_size.extend(model.preferred_batch_sizes)
    group = cfg.instance_group.add()
    group.count = model.instances
    group.kind = pb.ModelInstanceGroup.KIND_CPU
    params = dict(model.parameters)
    if model.kind == "onnx":
        params["onnx_file"] = "model.onnx"
        if variant == "onnxruntime":  # the ORT backend's own thread setting
            params["intra_op_thread_count"] = params.get("intra_op_threads", "1")
    for k, v in sorted(params.items()):
        cfg.parameters[k].string_value = v
    if model.warmup:
        w = cfg.model_warmup.add()
        w.name = f"{model.name}_zeros"
        w.batch_size = 1 if model.max_batch_size > 0 else 0
        for t in model.inputs:
            if t.name not in model.warmup:
                continue
            item = w.inputs[t.name]
            item.data_type = getattr(pb, DTYPES[t.dtype][0])
            item.dims.extend(model.warmup[t.name])
            item.zero_data = True
    return text_format.MessageToString(cfg)


def _tensor(pb, msg, t: TensorSpec, is_input: bool) -> None:
    msg.name = t.name
    msg.data_type = getattr(pb, DTYPES[t.dtype][0])
    msg.dims.extend(t.dims)
    if t.reshape is not None:
        msg.reshape.SetInParent()
        msg.reshape.shape.extend(t.reshape)
    if is_input and t.optional:
        msg.optional = True


def parse_config(text: str) -> Any:
    """Parse ``config.pbtxt`` text into a ``ModelConfig`` protobuf message."""
    from google.protobuf import text_format

    return text_format.Parse(text, _config_pb().ModelConfig())


def io_signature(config_text: str) -> dict[str, Any]:
    """What a client sees of a model config: batching, and every input and output with its
    type, dims, reshape and optionality. Two variants of a model must agree on this."""
    cfg = parse_config(config_text)
    pb = _config_pb()

    def tensors(items: Iterable[Any], with_optional: bool) -> list[tuple]:
        out = []
        for t in items:
            row = (t.name, pb.DataType.Name(t.data_type), tuple(t.dims), tuple(t.reshape.shape) if t.HasField("reshape") else None)
            out.append(row + ((t.optional,) if with_optional else ()))
        return out

    return {
        "name": cfg.name,
        "max_batch_size": cfg.max_batch_size,
        "dynamic_batching": cfg.HasField("dynamic_batching"),
        "inputs": tensors(cfg.input, True),
        "outputs": tensors(cfg.output, False),
    }
