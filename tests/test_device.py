import subprocess
import sys

import pytest
import torch

from course_utils.device import (
    autocast_dtype,
    available_devices,
    evaluating,
    get_device,
    seed_everything,
    training_mode,
)


def test_default_device_is_the_best_available():
    expected = "cuda" if torch.cuda.is_available() else available_devices()[0]
    assert get_device().type == expected
    assert get_device("cpu") == torch.device("cpu")


def test_unavailable_or_unknown_device_is_a_clear_error():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")
    with pytest.raises(ValueError, match="preferred must be one of"):
        get_device("tpu")


def test_autocast_dtype():
    assert autocast_dtype("cpu") == torch.float32
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert autocast_dtype("cuda") == torch.bfloat16


def test_seed_everything_repeats_random_draws():
    seed_everything(123)
    a = torch.rand(3), torch.randn(2)
    seed_everything(123)
    b = torch.rand(3), torch.randn(2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(TypeError):
        seed_everything("1")


def test_evaluating_restores_each_submodule_mode_also_on_error():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    model[1].eval()  # a submodule kept in eval mode on purpose
    with evaluating(model) as m:
        assert m is model and not any(x.training for x in model.modules())
    assert model.training and model[0].training and not model[1].training
    with pytest.raises(RuntimeError, match="boom"):
        with evaluating(model):
            raise RuntimeError("boom")
    assert model.training and not model[1].training
    model.eval()
    with training_mode(model):
        assert all(x.training for x in model.modules())
    assert not any(x.training for x in model.modules())
    with training_mode(model, False):
        assert not model.training


def test_import_is_light():
    code = "import sys, course_utils; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
