"""Learned absolute positions under tensor parallelism (mpirun -n 2): a FasterTransformer GPT-2
checkpoint (tests/python/test_export_ft_gpt.py builds it) exported with tp=2 gives, on every rank,
the tp=1 session's greedy tokens and logits (1e-4, fp32): pos_embed.weight is replicated and added
once, after the embedding's all-reduce."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from test_export_ft_gpt import random_gpt2, write_ft_gpt2  # noqa: E402

from fastattention.export import export_ft  # noqa: E402
from fastattention.session import Session  # noqa: E402

PROMPTS = [[1, 17, 42, 9, 5, 63, 7, 20, 31, 4, 50, 11, 8], [3, 25, 3, 77, 91, 12, 40]]
MAX_NEW = 8


def test_learned_positions_tp2_match_tp1(mpi, tmp_path):
    ft = write_ft_gpt2(random_gpt2(4), tmp_path / "ft", factor=1)
    one, two = tmp_path / "tp1", tmp_path / "tp2"
    export_ft(ft, one, tp=1, dtype="float32", progress=False)
    export_ft(ft, two, tp=2, dtype="float32", progress=False)
    ref = Session(one, num_threads=1, max_batch=len(PROMPTS))
    ref_tokens = ref.generate(PROMPTS, MAX_NEW)
    ref_logits = ref.logits(PROMPTS[0])

    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(dict(prompts=PROMPTS, max_new_tokens=MAX_NEW, prefill_chunk_tokens=5))
    )
    out = tmp_path / "out"
    out.mkdir()
    mpi.run(2, "session", two, out, spec)
    for r in range(2):
        res = dict(np.load(out / f"rank{r}.npz"))
        for tiling in ("plain", "tiles3", "auto"):
            assert res[f"tokens_{tiling}"].tolist() == ref_tokens, (r, tiling)
            err = np.abs(res[f"logits_{tiling}"] - ref_logits).max()
            assert err <= 1e-4, (r, tiling, err)
