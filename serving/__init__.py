"""Serving: ONNX export, the Triton model repository, publication and the client. Built by the export-and-serving work; empty until then."""
