"""neuroreg.runs.random_state: the global random states round-trip exactly (python, numpy,
torch; CUDA where a GPU is initialised) and the context manager restores them after a block."""

from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest
import torch

from neuroreg.runs.random_state import (
    SEED_ENV,
    kept_random_state,
    random_state,
    set_random_state,
)


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_round_trip_replays_the_same_draws():
    np.random.randn()  # a cached gaussian is part of numpy's state
    state = random_state()
    first = draws()
    set_random_state(state)
    assert draws() == first


def test_state_survives_a_weights_only_checkpoint():
    state = random_state()
    first = draws()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    set_random_state(torch.load(buf, weights_only=True))
    assert draws() == first


def test_kept_random_state_restores_after_the_block_and_after_an_error(monkeypatch):
    monkeypatch.setenv(SEED_ENV, "7")
    state = random_state()
    expected = draws()
    set_random_state(state)
    with kept_random_state():
        draws()
        os.environ[SEED_ENV] = "8"
    assert draws() == expected and os.environ[SEED_ENV] == "7"
    set_random_state(state)
    monkeypatch.delenv(SEED_ENV)
    with pytest.raises(RuntimeError), kept_random_state():
        draws()
        os.environ[SEED_ENV] = "9"
        raise RuntimeError("inside")
    assert draws() == expected and SEED_ENV not in os.environ


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_states_round_trip():
    torch.cuda.init()
    state = random_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    first = torch.rand(4, device="cuda").tolist()
    set_random_state(state)
    assert torch.rand(4, device="cuda").tolist() == first
    set_random_state(state)
    with kept_random_state():
        torch.rand(4, device="cuda")
    assert torch.rand(4, device="cuda").tolist() == first
