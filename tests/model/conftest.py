"""Fixtures of the training tests."""

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState


@pytest.fixture
def fresh_accelerate_state():
    """Each in-process run builds its own Accelerator (accelerate keeps process-wide singletons). One thread: tiny
    models gain nothing from more, and spinning threads slow to a crawl when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    torch.set_num_threads(threads)
