"""Triton Python-backend model: runs one exported ONNX file with onnxruntime.

Written by mavin_ops.serving.repository into ``<model>/<version>/model.py`` of the ``python``
variant of the model repository (the ``onnxruntime`` variant serves the same file with
``platform: "onnxruntime_onnx"`` instead). Needs numpy and onnxruntime only.

Dynamic batching hands ``execute`` several requests at once: requests whose inputs have the
same shapes (after the batch dimension) are concatenated, run as one batch and split again.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        path = os.path.join(here, params.get("onnx_file", "model.onnx"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, len(i.shape)) for i in self.session.get_inputs()]
        self.outputs = [o["name"] for o in config["output"]]
        self.batching = int(config.get("max_batch_size", 0)) > 0

    def _feed(self, request):
        feed = {}
        for name, rank in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"input '{name}' is missing")
            arr = tensor.as_numpy()
            if arr.ndim == rank + 1 and arr.shape[-1] == 1:  # a per-item scalar sent as [B, 1]
                arr = arr.reshape(arr.shape[:-1])
            feed[name] = arr
        return feed

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}
        for n, request in enumerate(requests):
            try:
                feed = self._feed(request)
            except ValueError as exc:
                responses[n] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
                continue
            key = tuple((k, v.shape[1:] if self.batching else v.shape, v.dtype.str) for k, v in sorted(feed.items()))
            groups.setdefault(key, []).append((n, feed))
        for members in groups.values():
            try:
                if len(members) == 1:
                    outs = [self.session.run(self.outputs, members[0][1])]
                else:
                    sizes = [next(iter(f.values())).shape[0] for _, f in members]
                    joined = {k: np.concatenate([f[k] for _, f in members]) for k in members[0][1]}
                    full = self.session.run(self.outputs, joined)
                    cuts = np.cumsum(sizes)[:-1]
                    parts = [np.split(o, cuts) for o in full]
                    outs = [[p[i] for p in parts] for i in range(len(members))]
                for (n, _), out in zip(members, outs):
                    responses[n] = pb_utils.InferenceResponse([pb_utils.Tensor(name, np.ascontiguousarray(v)) for name, v in zip(self.outputs, out)])
            except Exception as exc:  # onnxruntime rejects a shape the config allowed
                msg = " ".join(str(exc).split())[:500]
                for n, _ in members:
                    responses[n] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnxruntime: {msg}", pb_utils.TritonError.INVALID_ARG))
        return responses
