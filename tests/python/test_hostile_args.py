"""Hostile arguments (issue 17 items 3, 8, 10): values past the range of the C++ field, tiny
scales, odd paths and read-only arrays end in an exception naming the argument, or just work."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from hostile_model import tiny_config, write_tiny_model

import fastattention
from fastattention import ops, random_weights
from fastattention.session import Session

BIG = [2**31, 2**63 - 1, 2**63, 2**64, 10**30]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    write_tiny_model(path)
    return path


@pytest.fixture(scope="module")
def session(tiny):
    return Session(tiny)


# ------------------------------------------------------------------ item 3: softmax_scale range


@pytest.mark.parametrize("scale", [1e-50, 1e-39, 1e39, 1e300])
def test_softmax_scale_outside_float32_is_refused(scale):
    q = np.ones((1, 2, 1, 8), np.float32)
    with pytest.raises(ValueError, match=r"softmax_scale: .* outside float32's normal range"):
        ops.attention(q, q, q, softmax_scale=scale)


def test_small_representable_softmax_scale_is_used_not_replaced():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 4, 1, 8)).astype(np.float32) for _ in range(3))
    out = ops.attention(q, k, v, softmax_scale=1e-30)  # scores ~ 0: the mean of v
    np.testing.assert_allclose(out[0, :, 0], np.broadcast_to(v[0, :, 0].mean(0), (4, 8)), atol=1e-6)


# --------------------------------------------------------------------- item 8: integer ranges


@pytest.mark.parametrize("n", [2**63 - 1, 2**63, 2**64])
def test_huge_max_new_tokens_names_the_argument(session, n):
    with pytest.raises(
        ValueError, match=r"max_new_tokens(: \d+ exceeds max_seq_len \(128\)| must be <=)"
    ):
        session.generate([[1, 2, 3]], n)
    assert session.generate([[1, 2, 3]], 2)  # still usable


@pytest.mark.parametrize("token", BIG + [-(2**63) - 1])
def test_huge_token_ids_name_the_position(session, token):
    with pytest.raises(ValueError, match=r"prompt 0, position 1: token id -?\d+ is out of range"):
        session.generate([[1, token]], 2)
    with pytest.raises(
        ValueError, match=r"stop_tokens(, position 0)?: token id -?\d+ is out of range"
    ):
        session.generate([[1, 2]], 2, stop_tokens=[token])


@pytest.mark.parametrize("value", BIG)
def test_huge_top_k_names_the_argument(session, value):
    with pytest.raises(ValueError, match=r"top_k must be <= 2147483647"):
        session.generate([[1, 2]], 2, top_k=value, temperature=1.0)


@pytest.mark.parametrize(
    "option",
    [
        "num_threads",
        "max_batch",
        "kv_block_size",
        "max_seq_len",
        "tp_tiles",
        "max_cache_tokens",
        "prefill_chunk_tokens",
        "host_kv_tokens",
    ],
)
@pytest.mark.parametrize("value", [2**63, 2**64])
def test_huge_session_options_name_the_option(tiny, option, value):
    with pytest.raises(ValueError, match=rf"{option} must be <= \d+, got {value}"):
        Session(tiny, **{option: value})


@pytest.mark.parametrize("option", ["num_threads", "max_batch", "kv_block_size", "max_seq_len"])
def test_int32_session_options_past_int32(tiny, option):
    with pytest.raises(ValueError, match=rf"{option} must be <= 2147483647, got 2147483648"):
        Session(tiny, **{option: 2**31})


@pytest.mark.parametrize(
    "device", ["cuda:99999999999", "cuda:2147483648", "cuda:-1", "cuda:", "CPU", "cpu:0 "]
)
def test_bad_devices_name_the_device(tiny, device):
    with pytest.raises(ValueError, match=r"device: .* (is not a valid device|out of range)"):
        Session(tiny, device=device)


def test_huge_device_index_in_cpp_parser():
    """The C++ parser (used by ops on torch tensors, the communicator) gives a message, not stoi."""
    from fastattention._native import _C

    with pytest.raises(ValueError, match=r"device: 'cuda:99999999999': the GPU index is out"):
        _C.Communicator("local", "cuda:99999999999")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window=(2**40, 0)), None),  # wider than any sequence: unbounded
        (dict(num_threads=2**31), r"num_threads: must be in 0\.\.2147483647"),
        (dict(num_splits=2**63), r"num_splits: must be in 0\.\.2147483647"),
        (dict(num_threads=-1), r"num_threads: must be in 0\.\.2147483647, got -1"),
    ],
)
def test_ops_integer_arguments(kwargs, message):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 4, 2, 8)).astype(np.float32) for _ in range(3))
    if message is None:
        np.testing.assert_allclose(
            ops.attention(q, k, v, causal=True, **kwargs),
            ops.attention(q, k, v, causal=True),
            atol=1e-6,
        )
    else:
        with pytest.raises(ValueError, match=message):
            ops.attention(q, k, v, **kwargs)


# -------------------------------------------------------------- item 10: from_memory, odd paths


def test_from_memory_accepts_read_only_arrays():
    cfg = tiny_config()
    tensors = random_weights.shard_tensors(cfg, 0)
    ref = Session.from_memory(cfg, tensors).generate([[1, 2, 3]], 4)
    for a in tensors.values():
        a.flags.writeable = False
    assert Session.from_memory(cfg, tensors).generate([[1, 2, 3]], 4) == ref


def test_from_memory_bad_tensor_is_named():
    cfg = tiny_config()
    tensors = random_weights.shard_tensors(cfg, 0)
    tensors["final_norm.weight"] = tensors["final_norm.weight"].astype(np.float64)
    with pytest.raises(ValueError, match=r"tensors\['final_norm\.weight'\]"):
        Session.from_memory(cfg, tensors)


def test_model_path_as_bytes_and_pathlike(tiny):
    ref = Session(str(tiny)).generate([[1, 2]], 3)
    assert Session(os.fsencode(str(tiny))).generate([[1, 2]], 3) == ref
    assert Session(tiny).generate([[1, 2]], 3) == ref  # pathlib.Path


def test_model_path_that_is_not_utf8(tiny, tmp_path):
    """A directory whose name is not valid UTF-8 loads (str with surrogate escapes, or bytes),
    and errors about it keep their message, with the bad byte escaped."""
    raw = os.path.join(os.fsencode(str(tmp_path)), b"mod\xffel")
    shutil.copytree(str(tiny), os.fsdecode(raw))
    ref = Session(tiny).generate([[1, 2]], 3)
    assert Session(raw).generate([[1, 2]], 3) == ref
    assert Session(os.fsdecode(raw)).generate([[1, 2]], 3) == ref
    os.remove(os.path.join(raw, b"rank0", b"embed.weight.fat"))
    with pytest.raises(fastattention.WeightFileError, match=r"mod\\xffel/rank0/embed\.weight\.fat"):
        Session(raw)


@pytest.mark.parametrize("bad", [None, 3, ["a"], b"a\0b"])
def test_model_path_of_a_wrong_type(bad):
    with pytest.raises((TypeError, ValueError), match=r"model_dir"):
        Session(bad)
