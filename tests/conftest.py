"""Shared fixtures."""
import pytest
import torch


@pytest.fixture
def fake():
    """A FakeTensorMode in which CUDA tensors can be made without a GPU: ops run their fake kernels."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    mode = FakeTensorMode()
    with mode:
        try:
            torch.empty(1, device="cuda")
        except Exception as e:  # pragma: no cover - depends on the torch build
            pytest.skip(f"FakeTensorMode cannot make a CUDA tensor here: {e}")
    return mode
