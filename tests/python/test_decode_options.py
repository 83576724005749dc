"""The split-KV decode options of fmha_forward (num_splits, max_seqlen_k) on CPU arrays: checked,
and otherwise without effect there (the CPU kernel picks its own split)."""

import numpy as np
import pytest

from fastattention import _C, ops


def _paged_case(seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((2, 4, 32)).astype(np.float32)
    k = rng.standard_normal((6, 16, 2, 32)).astype(np.float32)
    v = rng.standard_normal((6, 16, 2, 32)).astype(np.float32)
    table = np.array([[3, 0, 5], [1, 4, 2]], dtype=np.int32)
    return q, k, v, table


def test_split_options_do_not_change_cpu_results():
    q, k, v, table = _paged_case()
    base = ops.attention_paged(q, k, v, [0, 1, 2], table, [40, 33], causal=True)
    for splits in (1, 3, 1024):
        out = ops.attention_paged(
            q,
            k,
            v,
            [0, 1, 2],
            table,
            [40, 33],
            causal=True,
            num_splits=splits,
            max_seqlen_k=40,
            max_seqlen_q=1,
        )
        np.testing.assert_array_equal(out, base)


def test_split_options_are_checked():
    q, k, v, table = _paged_case(1)
    out = np.empty_like(q)
    common = dict(
        cu_seqlens_q=np.array([0, 1, 2], np.int32),
        block_table=table,
        seqlens_k=np.array([40, 33], np.int32),
    )
    with pytest.raises(ValueError, match="num_splits"):
        _C.fmha_forward(q, k, v, out, num_splits=-1, **common)
    with pytest.raises(ValueError, match="num_splits"):
        _C.fmha_forward(q, k, v, out, num_splits=1025, **common)
    with pytest.raises(ValueError, match="max_seqlen_k"):
        _C.fmha_forward(q, k, v, out, max_seqlen_k=-2, **common)
    with pytest.raises(ValueError, match="impl"):
        ops.attention_paged(q, k, v, [0, 1, 2], table, [40, 33], impl="decode")
    with pytest.raises(ValueError, match="max_seqlen_q"):
        ops.attention_paged(q, k, v, [0, 1, 2], table, [40, 33], max_seqlen_q=-1)
