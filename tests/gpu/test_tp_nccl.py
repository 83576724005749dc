"""Tensor parallelism on 2 GPUs over NCCL (mpirun -n 2, one GPU per rank; the lent nvidia-h200-x2).
Skipped without 2 GPUs, mpirun, or a build with NCCL. tests/gpu/tp_nccl_worker.py runs on each rank.

  * NCCL collectives and the tiling-AllReduce (async all-reduce on the communication stream,
    ordered by events) against exact (integers) and float64 (fp32 / bf16 / fp16) references;
  * Session(device="cuda") on a tp=2 float32 export gives the greedy tokens and (1e-3) logits of
    the tp=1 GPU session, with and without the overlap, on both ranks.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from fastattention._native import _C  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
WORKER = HERE / "tp_nccl_worker.py"
# Head dim 64 (the CUDA decode kernel's smallest), 2 query and 1 KV head per rank at tp=2.
WIDE = dict(hidden_size=256, num_attention_heads=4, intermediate_size=384, num_key_value_heads=2)

_spec = importlib.util.spec_from_file_location(
    "_fa_mpi_conftest", HERE.parent / "mpi" / "conftest.py"
)
_mpi_helpers = importlib.util.module_from_spec(_spec)
# Registered before it runs: its dataclasses look their module up in sys.modules.
sys.modules[_spec.name] = _mpi_helpers
_spec.loader.exec_module(_mpi_helpers)

pytestmark = pytest.mark.skipif(
    not (
        torch.cuda.is_available()
        and torch.cuda.device_count() >= 2
        and _C.distributed_info()["nccl_built"]
    ),
    reason="needs 2 GPUs and a build with NCCL (and MPI)",
)


@pytest.fixture(scope="module")
def mpi():
    mpirun = _mpi_helpers.find_mpirun()
    if mpirun is None:
        pytest.skip("mpirun not found")
    import subprocess

    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout
    return _mpi_helpers.Mpi(mpirun, "Open MPI" in version or "OpenRTE" in version)


def test_nccl_collectives(mpi, tmp_path):
    mpi.run(2, "collectives", tmp_path, script=WORKER, timeout=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nccl_ok_rank0", "nccl_ok_rank1"]


def test_nccl_session_matches_tp1(mpi, exported_model_factory, tmp_path):
    from fastattention.session import Session

    prompts = [[1, 17, 42, 99, 5, 63, 7, 200, 31, 4, 150], [1, 250, 3, 77, 91], [1, 44]]
    ref = Session(
        exported_model_factory("llama", tp=1, **WIDE).path, device="cuda:0", max_batch=len(prompts)
    )
    ref_tokens = ref.generate(prompts, 6)
    ref_logits = ref.logits(prompts[0])
    del ref
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(dict(prompts=prompts, max_new_tokens=6)))
    out = tmp_path / "out"
    out.mkdir()
    mpi.run(
        2,
        "session",
        exported_model_factory("llama", tp=2, **WIDE).path,
        out,
        spec,
        script=WORKER,
        timeout=300,
    )
    for r in range(2):
        res = np.load(out / f"rank{r}.npz")
        names = ["plain", "tiles3"] + (
            ["gather3"] if torch.cuda.nccl.version() >= (2, 28, 0) else []
        )
        for name in names:
            assert res[f"tokens_{name}"].tolist() == ref_tokens, (r, name)
            assert np.abs(res[f"logits_{name}"] - ref_logits).max() <= 1e-3, (r, name)


@pytest.mark.parametrize(
    "var, value, message",
    [
        (
            "FASTATTN_TP_ALLREDUCE",
            "ring",
            "FASTATTN_TP_ALLREDUCE: expected nccl or gather, got 'ring'",
        ),
        (
            "FASTATTN_NCCL_CTA_POLICY",
            "fast",
            "FASTATTN_NCCL_CTA_POLICY: expected default, efficiency",
        ),
        (
            "FASTATTN_TP_GEMM_SMS",
            "many",
            "FASTATTN_TP_GEMM_SMS: expected an integer in [0, 2147483647]",
        ),
    ],
)
def test_bad_nccl_settings_fail_every_rank(mpi, tmp_path, var, value, message):
    res = mpi.run(2, "start", tmp_path, script=WORKER, env={var: value}, check=False, timeout=120)
    assert res.returncode != 0, res.output
    assert message in res.output, res.output
    assert not list(tmp_path.iterdir()), res.output  # no rank got past the start
