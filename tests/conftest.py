"""Fixtures shared by test modules (used by name; none is autouse here)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads; on shared cores two threads can be 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """The bad-input catalogue's files (tests/bad_inputs.py), written once for its test modules."""
    from .bad_inputs import make_assets  # imports diffusers: only where a test asks for the files

    return make_assets(tmp_path_factory.mktemp("bad_inputs"))
