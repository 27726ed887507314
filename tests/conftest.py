import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


TINY_NET = {"channels": (4, 8), "hidden": (16,)}
"""Small enough that a test trains in well under a second."""
