"""Serving: ONNX export, the Triton model repository, atomic publication, the server and the client.

The path of a released model, each step one library function (the CLI and the KFP components
are thin wrappers over them)::

    export_and_build(checkpoint, out)       ONNX export with parity checks + model repository
    publish(out, store)                     atomic publication to a local or S3 model store
    fetch(store, dest) / serve(dest)        a real tritonserver on loopback, ready when it returns
    generate(script, "scene.mp4", url=...)  MTSS script -> mp4 with its audio track

Modules: ``spec`` (the one description of the served models), ``export`` (ONNX + parity),
``repository`` (config.pbtxt, version folders, lineage files), ``pipeline`` (the generation
pipeline shared by Triton and in-process ONNX Runtime), ``store`` (publication), ``server``
(tritonserver), ``client`` (tritonclient), ``smoke`` (the release smoke test), ``examples``.
``triton_models/`` holds the Python-backend ``model.py`` sources written into a repository.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "build_repository",
    "export_and_build",
    "export_model",
    "fetch",
    "generate",
    "list_versions",
    "publish",
    "run_server",
    "serve",
    "smoke_test",
]

_WHERE = {
    "build_repository": "repository",
    "export_and_build": "repository",
    "export_model": "export",
    "fetch": "store",
    "generate": "client",
    "list_versions": "store",
    "publish": "store",
    "run_server": "server",
    "serve": "server",
    "smoke_test": "smoke",
}


def __getattr__(name: str) -> Any:  # lazy: importing the package pulls in neither torch nor tritonclient
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
