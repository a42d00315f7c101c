"""Triton Python-backend model ``mavin_generate``: MTSS script -> frames and waveform.

Written by mavin_ops.serving.repository into ``mavin_generate/<version>/model.py``. It runs
``mavin_ops.serving.pipeline.Pipeline`` (installed in the serving image) with a runner that
calls ``text_encoder``, ``denoiser``, ``video_decoder`` and ``audio_decoder`` through BLS, so
the Euler loop's denoiser steps go through Triton's scheduler (and its dynamic batcher).

A request the pipeline refuses (bad script, over a limit, wrong media) gets an INVALID_ARG
error: HTTP 400 / gRPC INVALID_ARGUMENT, with the pipeline's one-line message.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class _BlsError(RuntimeError):
    pass


class TritonPythonModel:
    def initialize(self, args):
        import torch

        from mavin_ops.model.config import ModelConfig
        from mavin_ops.serving.pipeline import Pipeline
        from mavin_ops.serving.spec import ServingLimits

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        torch.set_num_threads(int(params.get("torch_threads", "1")))
        here = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(here, "mavin_model.json"), encoding="utf-8") as fh:
            info = json.load(fh)
        self.wire = info["parts_io"]  # model -> input -> dims/reshape, for BLS wire shapes
        self.version = int(args["model_version"])
        self.pipeline = Pipeline(ModelConfig.from_dict(info["config"]), self._bls, ServingLimits.from_parameters(params))
        self.outputs = [o["name"] for o in config["output"]]

    def _bls(self, model, inputs, outputs):
        tensors = []
        for name, arr in inputs.items():
            spec = self.wire[model][name]
            if spec.get("reshape") is not None:  # the model sees [B]; the wire carries [B, 1]
                arr = arr.reshape((arr.shape[0],) + tuple(spec["dims"]))
            tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(arr)))
        request = pb_utils.InferenceRequest(model_name=model, model_version=self.version, requested_output_names=list(outputs), inputs=tensors)
        response = request.exec()
        if response.has_error():
            raise _BlsError(f"{model}: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}

    def execute(self, requests):
        from mavin_ops.serving.pipeline import GenerateRequest, RequestError

        responses = []
        for request in requests:
            names = ("script", "seed", "steps", "guidance", "reference_ids", "reference_images", "reference_audio", "reference_audio_samples")
            raw = {}
            for name in names:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                raw[name] = tensor.as_numpy() if tensor is not None else None
            try:
                clip = self.pipeline(GenerateRequest.from_inputs(raw))
            except RequestError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)))
                continue
            except Exception as exc:  # a failing part model or a bug: an internal error, logged
                msg = " ".join(str(exc).split())[:500]
                pb_utils.Logger.log_error(f"mavin_generate: {type(exc).__name__}: {msg}")
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generation failed: {type(exc).__name__}: {msg}")))
                continue
            out = clip.to_outputs()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(name, np.ascontiguousarray(out[name])) for name in self.outputs]))
        return responses
