"""The .fat tensor file writer and reader (docs/FORMAT.md), checked against the spec byte by
byte."""

import os
import struct

import numpy as np
import pytest

from fastattention.export import (
    WeightFileError,
    bfloat16_bits_to_float32,
    float32_to_bfloat16_bits,
    read_header,
    read_tensor,
    write_tensor,
)

torch = pytest.importorskip("torch")

CODES = {"float32": 0, "float16": 1, "bfloat16": 2, "int32": 3, "int64": 4}
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4, "int64": 8}


def parse_by_spec(path):
    """An independent parse of a .fat file, straight from the FORMAT.md table."""
    raw = open(path, "rb").read()
    magic = raw[:8]
    version, code, ndim, offset = struct.unpack("<4I", raw[8:24])
    shape = struct.unpack(f"<{ndim}Q", raw[24 : 24 + 8 * ndim])
    padding = raw[24 + 8 * ndim : offset]
    return magic, version, code, ndim, offset, shape, padding, raw[offset:], len(raw)


def torch_bf16_bits(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def random_values(rng, shape, dtype):
    if dtype.startswith("int"):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 3).astype(np.float32)


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("ndim", [1, 2, 3, 5, 6])
def test_round_trip_matches_spec(tmp_path, dtype, ndim):
    rng = np.random.default_rng(ndim * 10 + CODES[dtype])
    shape = tuple(int(s) for s in rng.integers(1, 5, size=ndim))
    values = random_values(rng, shape, dtype)
    path = tmp_path / "t.fat"
    write_tensor(path, values, dtype)

    magic, version, code, nd, offset, shp, padding, data, size = parse_by_spec(path)
    assert magic == b"FASTATTN" and version == 1 and code == CODES[dtype] and nd == ndim
    assert shp == shape
    assert offset % 64 == 0 and offset >= 24 + 8 * ndim and offset - 64 < 24 + 8 * ndim
    assert padding == b"\0" * len(padding)
    assert size == offset + int(np.prod(shape)) * ITEMSIZE[dtype]

    if dtype == "bfloat16":
        expected = torch_bf16_bits(values)
        assert np.array_equal(np.frombuffer(data, "<u2").reshape(shape), expected)
        assert np.array_equal(read_tensor(path), expected)
        assert read_tensor(path).dtype == np.uint16
        up = read_tensor(path, upcast_bf16=True)
        assert up.dtype == np.float32
        assert np.array_equal(up, torch.from_numpy(values).to(torch.bfloat16).float().numpy())
    else:
        expected = values.astype(dtype)
        assert np.array_equal(
            np.frombuffer(data, np.dtype(dtype).newbyteorder("<")).reshape(shape), expected
        )
        got = read_tensor(path)
        assert got.dtype == np.dtype(dtype) and np.array_equal(got, expected)
        assert np.array_equal(read_tensor(path, mmap=True), expected)
    header = read_header(path)
    assert (header.version, header.dtype, header.shape, header.data_offset) == (
        1,
        dtype,
        shape,
        offset,
    )


def test_bfloat16_rounding_matches_torch():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(20000).astype(np.float32) * np.float32(1e3)
    # exact ties between two bfloat16 values (low 16 bits = 0x8000), odd and even, both signs
    ties = (rng.integers(0, 2**15, 2000, dtype=np.uint32) << 16 | 0x8000).astype(np.uint32)
    specials = np.array(
        [0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-40, -1e-45], dtype=np.float32
    )
    x = np.concatenate([x, ties.view(np.float32), specials])
    x = x[~np.isnan(x)]  # NaN payloads may differ (torch canonicalises them); checked below
    assert np.array_equal(float32_to_bfloat16_bits(x), torch_bf16_bits(x))
    nan_bits = np.array([0x7FC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF], np.uint32)
    nan = float32_to_bfloat16_bits(nan_bits.view(np.float32))
    assert np.isnan(bfloat16_bits_to_float32(nan)).all()
    bits = np.arange(0, 2**16, dtype=np.uint16)
    finite = np.isfinite(bfloat16_bits_to_float32(bits))
    # widening then rounding is the identity on every finite bfloat16
    assert np.array_equal(
        float32_to_bfloat16_bits(bfloat16_bits_to_float32(bits))[finite], bits[finite]
    )


def test_torch_tensor_input(tmp_path):
    t = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    write_tensor(tmp_path / "bf.fat", t.to(torch.bfloat16))
    assert read_header(tmp_path / "bf.fat").dtype == "bfloat16"
    assert np.array_equal(
        read_tensor(tmp_path / "bf.fat"),
        t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16),
    )
    write_tensor(tmp_path / "h.fat", t, "float16")
    assert np.array_equal(read_tensor(tmp_path / "h.fat"), t.half().numpy())
    write_tensor(tmp_path / "f.fat", t.to(torch.bfloat16), "float32")
    assert np.array_equal(read_tensor(tmp_path / "f.fat"), t.to(torch.bfloat16).float().numpy())


def test_uint16_bits_written_as_is(tmp_path):
    bits = np.arange(100, 160, dtype=np.uint16).reshape(6, 10)
    write_tensor(tmp_path / "b.fat", bits, "bfloat16")
    assert np.array_equal(read_tensor(tmp_path / "b.fat"), bits)


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="pass dtype='bfloat16'"):
        write_tensor(tmp_path / "a.fat", np.zeros(3, np.uint16) + 1)
    with pytest.raises(ValueError, match="holds bfloat16 bits; it cannot be stored as float16"):
        write_tensor(tmp_path / "a.fat", np.ones(3, np.uint16), "float16")
    with pytest.raises(ValueError, match="0 dims"):
        write_tensor(tmp_path / "a.fat", np.float32(1.0))
    with pytest.raises(ValueError, match="7 dims"):
        write_tensor(tmp_path / "a.fat", np.ones((1,) * 7, np.float32))
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        write_tensor(tmp_path / "a.fat", np.ones(3, np.float32), "float8")
    with pytest.raises(ValueError, match="cannot store a int32 array as float32"):
        write_tensor(tmp_path / "a.fat", np.ones(3, np.int32), "float32")
    with pytest.raises(ValueError, match="cannot store a float64 array"):
        write_tensor(tmp_path / "a.fat", np.ones(3))
    assert not os.listdir(tmp_path)  # nothing half-written left behind


def _corrupt(path, offset, payload):
    raw = bytearray(open(path, "rb").read())
    raw[offset : offset + len(payload)] = payload
    open(path, "wb").write(bytes(raw))


@pytest.mark.parametrize(
    "fault, match",
    [
        (lambda p: _corrupt(p, 0, b"FASTATTX"), "bad magic"),
        (lambda p: _corrupt(p, 8, struct.pack("<I", 2)), "format version 2"),
        (lambda p: _corrupt(p, 12, struct.pack("<I", 9)), "unknown dtype code 9"),
        (lambda p: _corrupt(p, 16, struct.pack("<I", 0)), "ndim 0"),
        (
            lambda p: _corrupt(p, 20, struct.pack("<I", 60)),
            "data_offset 60 is not a multiple of 64",
        ),
        (lambda p: open(p, "ab").write(b"\0"), "needs exactly"),
        (lambda p: os.truncate(p, os.path.getsize(p) - 4), "needs exactly"),
        (lambda p: os.truncate(p, 10), "too short for a header"),
        (lambda p: os.remove(p), "cannot read tensor file"),
    ],
)
def test_reader_rejects_bad_files(tmp_path, fault, match):
    path = tmp_path / "layers.0.attn.qkv.weight.fat"
    write_tensor(path, np.ones((4, 3), np.float32))
    fault(path)
    with pytest.raises(WeightFileError, match=match) as err:
        read_tensor(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)
