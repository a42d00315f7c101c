"""Every module of the evaluation package declares its public names, and they exist."""

import importlib

import pytest

import mavin_ops.evaluation as pkg


@pytest.mark.parametrize("name", pkg.__all__)
def test_all_names_exist(name):
    module = importlib.import_module(f"mavin_ops.evaluation.{name}")
    assert module.__all__, name
    for public in module.__all__:
        assert hasattr(module, public), f"{name}.{public}"
    assert module.__doc__ and module.__doc__.strip()


def test_component_modules_expose_their_component():
    from mavin_ops.components.evaluate.component import evaluate
    from mavin_ops.components.gate.component import gate

    assert evaluate.name == "evaluate" and gate.name == "gate"
    assert evaluate.python_func.__doc__ and gate.python_func.__doc__
