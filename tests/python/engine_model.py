"""The tiny random model of the engine tests (test_engine.py, test_engine_preemption.py): its
fixtures and a session factory. A test module imports the fixtures it uses."""

from __future__ import annotations

import pytest
import text_helpers as h

from fastattention import random_weights
from fastattention.session import Session

VOCAB = 300


@pytest.fixture(scope="module")
def weights():
    cfg = h.tiny_config(VOCAB)
    return cfg, random_weights.shard_tensors(cfg, 0, seed=3)


def session(weights, **options) -> Session:
    cfg, w = weights
    options.setdefault("max_batch", 6)
    return Session.from_memory(cfg, w, num_threads=1, **options)


@pytest.fixture(scope="module")
def reference(weights):
    """The session every request is compared with, run alone."""
    return session(weights)
