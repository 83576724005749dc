"""In-flight batching (fastattention.engine) on a tp=2 model under mpirun -n 2: rank 0 takes the
requests and schedules, rank 1 steps with it (follow); every request's tokens equal a tp=1 session
running it alone, a cancelled request frees its blocks, both ranks end with the same stats (the
same steps) and whole KV pools, and rank 1 refuses requests. `fastattention serve` under
mpirun answers like Session.chat and shuts down on SIGINT."""
from __future__ import annotations

import json
import random

from fastattention import random_weights
from fastattention.session import Session

CONFIG = dict(
    architecture="llama", dtype="float32", tp_size=1, vocab_size=512, vocab_size_padded=512,
    hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=96,
    max_position_embeddings=256, norm_type="rmsnorm", norm_eps=1e-5, activation="silu",
    gated_ffn=True, qkv_bias=False, o_bias=False, mlp_bias=False, tie_word_embeddings=False,
    rope=dict(theta=10000.0, style="neox", rotary_dim=16, scaling=dict(type="none")),
    sliding_window=None, bos_token_id=1, eos_token_id=[2])


def write(tmp_path, tp: int):
    path = tmp_path / f"model-tp{tp}"
    random_weights.write_model(random_weights.config_for_tp(CONFIG, tp), path, seed=5)
    return path


def test_engine_under_mpirun(mpi, tmp_path):
    rng = random.Random(3)
    requests = [([rng.randrange(3, 512) for _ in range(rng.randint(2, 30))],
                 dict(max_new_tokens=rng.randint(3, 12), seed=i,
                      temperature=[0.0, 0.9][i % 2])) for i in range(7)]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(dict(requests=requests, cancel=3)))
    out = tmp_path / "out"
    out.mkdir()
    mpi.run(2, "engine", write(tmp_path, 2), out, spec)
    r0, r1 = (json.loads((out / f"engine{r}.json").read_text()) for r in (0, 1))
    ref = Session(write(tmp_path, 1), num_threads=1)
    for i, (prompt, kw) in enumerate(requests):
        alone = ref.generate([prompt], **kw)[0]
        if i == 3:
            assert r0["reasons"][i] == "cancelled" and r0["tokens"][i] == alone[:2]
        else:
            assert r0["tokens"][i] == alone, i
            assert r0["reasons"][i] == "length"
    assert r0["stats"] == {**r1["stats"], "step_seconds": r0["stats"]["step_seconds"]}
    assert r0["stats"]["kv_blocks_free"] == r0["stats"]["kv_blocks_total"]
    assert r0["stats"]["running"] == 0 and r0["stats"]["cancelled"] == 1
    assert "rank 0 takes the requests" in r1["add_error"]
