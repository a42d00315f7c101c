"""The public API of mavin_ops.serving: every name in __all__ resolves, and importing the
package stays light (no torch, no tritonclient) until a function is used."""

import importlib
import subprocess
import sys

import mavin_ops.serving as serving

MODULES = ("spec", "export", "repository", "pipeline", "store", "server", "client", "smoke", "examples")


def test_every_exported_name_resolves():
    for name in serving.__all__:
        assert callable(getattr(serving, name)), name
    for mod in MODULES:
        m = importlib.import_module(f"mavin_ops.serving.{mod}")
        for name in m.__all__:
            assert hasattr(m, name), f"{mod}.{name}"


def test_importing_the_package_is_light():
    code = "import sys, mavin_ops.serving; print(sorted(m for m in ('torch', 'tritonclient', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
