"""Reader and writer for FastAttention tensor files (`*.fat`), format version 1 (docs/FORMAT.md).

Layout (little-endian): magic `FASTATTN`, uint32 version, uint32 dtype code, uint32 ndim,
uint32 data_offset (a multiple of 64), uint64 shape[ndim], zero padding up to data_offset, then the
elements in row-major order; the file is exactly data_offset + numel * itemsize bytes.

numpy has no bfloat16, so bfloat16 data travels as uint16 bit patterns: pass dtype="bfloat16" with
a uint16 array (bits as they are) or with a float array (rounded to nearest even, as torch does);
a torch.bfloat16 tensor is accepted as well. read_tensor returns the uint16 bits, or float32 values
with upcast_bf16=True.
"""

from __future__ import annotations

import math
import os
import struct
from typing import NamedTuple

import numpy as np

try:  # the compiled core's exception (a ValueError), so Python and C++ readers fail alike
    from fastattention._native import WeightFileError
except ImportError:  # pragma: no cover - only when the extension is not built

    class WeightFileError(ValueError):
        """A weight file that is missing, truncated or malformed."""


MAGIC = b"FASTATTN"
VERSION = 1
ALIGNMENT = 64
MAX_NDIM = 6
_FIXED_HEADER = struct.Struct("<8sIIII")  # magic, version, dtype, ndim, data_offset

# name -> (code, numpy storage dtype); bfloat16 is stored from / read into uint16 bits.
DTYPES = {
    "float32": (0, np.dtype("<f4")),
    "float16": (1, np.dtype("<f2")),
    "bfloat16": (2, np.dtype("<u2")),
    "int32": (3, np.dtype("<i4")),
    "int64": (4, np.dtype("<i8")),
}
_DTYPE_BY_CODE = {code: name for name, (code, _) in DTYPES.items()}
FLOAT_DTYPES = ("float32", "float16", "bfloat16")


class FatHeader(NamedTuple):
    version: int
    dtype: str
    shape: tuple
    data_offset: int


def data_offset_for(ndim: int) -> int:
    """Where the elements start for a tensor of `ndim` dims: the header rounded up to 64 bytes."""
    header = _FIXED_HEADER.size + 8 * ndim
    return (header + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


# ---------------------------------------------------------------------------------------------
# bfloat16 <-> float32 on uint16 bit patterns


def float32_to_bfloat16_bits(x) -> np.ndarray:
    """Rounds float32 values to bfloat16 (nearest, ties to even; NaN stays a quiet NaN)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    rounding = ((bits >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return out


def bfloat16_bits_to_float32(bits) -> np.ndarray:
    """Exact widening of bfloat16 bit patterns (uint16) to float32."""
    bits = np.ascontiguousarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def convert_float(x: np.ndarray, dtype: str) -> np.ndarray:
    """Float array -> storage array of `dtype` (float32 | float16 | bfloat16 as uint16 bits)."""
    if dtype == "bfloat16":
        return float32_to_bfloat16_bits(x)
    with np.errstate(over="ignore"):  # callers check for values that became inf
        return np.ascontiguousarray(x, dtype=DTYPES[dtype][1])


# ---------------------------------------------------------------------------------------------
# writer


def _check_dtype_name(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype '{dtype}'; expected one of {', '.join(DTYPES)}")


def _from_torch(tensor, dtype):
    """torch.Tensor -> (numpy array, dtype name); bfloat16 as uint16 bits."""
    import torch

    t = tensor.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        bits = t.view(torch.int16).numpy().view(np.uint16)
        if dtype in (None, "bfloat16"):
            return bits, "bfloat16"
        return bfloat16_bits_to_float32(bits), dtype
    return t.numpy(), dtype


def _storage_array(array: np.ndarray, dtype: str | None, path) -> tuple[np.ndarray, str]:
    """Resolves the target dtype and returns the little-endian array to write."""
    kind = array.dtype.kind
    if dtype is None:
        inferred = {
            np.dtype(np.float32): "float32",
            np.dtype(np.float16): "float16",
            np.dtype(np.int32): "int32",
            np.dtype(np.int64): "int64",
        }.get(array.dtype.newbyteorder("="))
        if inferred is None:
            hint = " (bfloat16 bits: pass dtype='bfloat16')" if array.dtype == np.uint16 else ""
            raise ValueError(f"cannot store a {array.dtype} array in {path}{hint}; pass dtype=")
        dtype = inferred
    _check_dtype_name(dtype)
    if array.dtype == np.uint16:
        if dtype != "bfloat16":
            raise ValueError(
                f"a uint16 array holds bfloat16 bits; it cannot be stored as {dtype} in {path}"
            )
        return np.ascontiguousarray(array, dtype="<u2"), dtype
    if dtype in FLOAT_DTYPES:
        if kind != "f":
            raise ValueError(f"cannot store a {array.dtype} array as {dtype} in {path}")
        if dtype == "bfloat16":
            return float32_to_bfloat16_bits(array), dtype
    elif kind not in "iu":
        raise ValueError(f"cannot store a {array.dtype} array as {dtype} in {path}")
    return np.ascontiguousarray(array, dtype=DTYPES[dtype][1]), dtype


def write_tensor(path, array, dtype: str | None = None) -> None:
    """Writes `array` (numpy array or torch tensor) to `path` as a .fat file.

    dtype: the stored dtype ("float32", "float16", "bfloat16", "int32", "int64"); by default the
    array's own. Float arrays are rounded to a narrower float dtype; a uint16 array is taken as
    bfloat16 bits and needs dtype="bfloat16". The file is written to a temporary name and renamed,
    so a reader never sees half a file.
    """
    if not isinstance(array, np.ndarray):
        if type(array).__module__.startswith("torch"):
            array, dtype = _from_torch(array, dtype)
        else:
            array = np.asarray(array)
    if not 1 <= array.ndim <= MAX_NDIM:  # checked first: ascontiguousarray makes 0-d arrays 1-d
        raise ValueError(f"tensor for {path} has {array.ndim} dims; the format holds 1..{MAX_NDIM}")
    data, dtype = _storage_array(array, dtype, path)
    data = data.reshape(array.shape)
    offset = data_offset_for(data.ndim)
    header = _FIXED_HEADER.pack(MAGIC, VERSION, DTYPES[dtype][0], data.ndim, offset)
    header += struct.pack(f"<{data.ndim}Q", *data.shape)
    header += b"\0" * (offset - len(header))
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(memoryview(data.reshape(-1)).cast("B"))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# reader


def read_header(path) -> FatHeader:
    """Reads and validates the header; raises WeightFileError naming the file and the fault."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(_FIXED_HEADER.size + 8 * MAX_NDIM)
    except OSError as e:
        raise WeightFileError(f"cannot read tensor file {path}: {e.strerror or e}") from e
    if len(head) < _FIXED_HEADER.size:
        raise WeightFileError(f"{path}: file too short for a header ({size} bytes)")
    magic, version, code, ndim, offset = _FIXED_HEADER.unpack_from(head)
    if magic != MAGIC:
        raise WeightFileError(f"{path}: bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise WeightFileError(f"{path}: format version {version}, this reader knows {VERSION}")
    if code not in _DTYPE_BY_CODE:
        raise WeightFileError(f"{path}: unknown dtype code {code}")
    if not 1 <= ndim <= MAX_NDIM:
        raise WeightFileError(f"{path}: ndim {ndim} outside 1..{MAX_NDIM}")
    if offset % ALIGNMENT or offset < _FIXED_HEADER.size + 8 * ndim:
        raise WeightFileError(
            f"{path}: data_offset {offset} is not a multiple of {ALIGNMENT} "
            f"at or past the end of the shape"
        )
    if len(head) < _FIXED_HEADER.size + 8 * ndim:
        raise WeightFileError(f"{path}: file too short for its shape ({size} bytes)")
    shape = struct.unpack_from(f"<{ndim}Q", head, _FIXED_HEADER.size)
    dtype = _DTYPE_BY_CODE[code]
    expected = offset + math.prod(shape) * DTYPES[dtype][1].itemsize
    if size != expected:
        raise WeightFileError(
            f"{path}: file is {size} bytes; a {dtype} tensor of shape "
            f"{list(shape)} at offset {offset} needs exactly {expected}"
        )
    return FatHeader(version, dtype, tuple(int(s) for s in shape), offset)


def read_tensor(path, upcast_bf16: bool = False, mmap: bool = False) -> np.ndarray:
    """Reads a .fat file into a numpy array of its shape.

    bfloat16 comes back as uint16 bits (use read_header(path).dtype to tell), or as float32 with
    upcast_bf16=True. mmap=True maps the file read-only instead of reading it (not with upcast).
    """
    header = read_header(path)
    storage = DTYPES[header.dtype][1]
    if mmap and not (upcast_bf16 and header.dtype == "bfloat16"):
        return np.memmap(
            path, dtype=storage, mode="r", offset=header.data_offset, shape=header.shape
        )
    with open(path, "rb") as f:
        f.seek(header.data_offset)
        data = np.fromfile(f, dtype=storage, count=math.prod(header.shape))
    data = data.reshape(header.shape)
    if upcast_bf16 and header.dtype == "bfloat16":
        return bfloat16_bits_to_float32(data)
    return data
