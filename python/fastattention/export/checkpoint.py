"""Reads the tensors of a Hugging Face checkpoint directory, one at a time, as float32 numpy arrays.

Weight files, in order of preference: model.safetensors.index.json (sharded), model.safetensors,
pytorch_model.bin.index.json, pytorch_model.bin (the .bin forms need torch).

safetensors files are read with the safetensors library (framework="numpy"). numpy has no
bfloat16, so BF16 tensors are read from their raw bytes, located through the file's own header
(8-byte little-endian header length, JSON header with each tensor's dtype, shape and byte offsets),
and widened exactly to float32: no torch needed, and no rounding anywhere. Every supported source
dtype (F32, F16, BF16, F64) widens exactly except F64.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from fastattention.export.format import bfloat16_bits_to_float32

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_FILE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_FILE = "pytorch_model.bin"

_FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}


def _read_index(hf_dir: str, index_name: str) -> dict:
    """name -> absolute shard path, from a Hugging Face *.index.json; checks every shard exists."""
    index_path = os.path.join(hf_dir, index_name)
    try:
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read the weight index {index_path}: {e}") from e
    files = {}
    for name, shard in weight_map.items():
        path = os.path.join(hf_dir, shard)
        files[name] = path
    for path in sorted(set(files.values())):
        if not os.path.isfile(path):
            raise ValueError(f"weight file {path} listed in {index_path} is missing")
    return files


class _SafetensorsFiles:
    def __init__(self, files: dict):
        from safetensors import safe_open

        self._safe_open = safe_open
        self.files = files
        self._handles = {}
        self._raw_headers = {}

    def _handle(self, path):
        if path not in self._handles:
            try:
                self._handles[path] = self._safe_open(path, framework="numpy")
            except Exception as e:  # safetensors raises its own error types
                raise ValueError(f"cannot open safetensors file {path}: {e}") from e
        return self._handles[path]

    def shape(self, name):
        return tuple(self._handle(self.files[name]).get_slice(name).get_shape())

    def _raw_header(self, path):
        """(header dict, byte offset of the data section) of a safetensors file."""
        if path not in self._raw_headers:
            with open(path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
            self._raw_headers[path] = (header, 8 + length)
        return self._raw_headers[path]

    def get(self, name) -> np.ndarray:
        path = self.files[name]
        dtype = self._handle(path).get_slice(name).get_dtype()
        if dtype not in _FLOAT_DTYPES:
            raise ValueError(
                f"tensor '{name}' in {path} has dtype {dtype}; the exporter reads "
                f"floating-point weights only ({', '.join(sorted(_FLOAT_DTYPES))})"
            )
        if dtype != "BF16":
            return np.asarray(self._handle(path).get_tensor(name), dtype=np.float32)
        header, data_start = self._raw_header(path)
        entry = header[name]
        begin, end = entry["data_offsets"]
        count = (end - begin) // 2
        with open(path, "rb") as f:
            f.seek(data_start + begin)
            bits = np.fromfile(f, dtype="<u2", count=count)
        if bits.size != count:
            raise ValueError(f"tensor '{name}' in {path} is truncated")
        return bfloat16_bits_to_float32(bits).reshape(entry["shape"])


class _TorchBinFiles:
    """pytorch_model.bin shards, loaded one shard at a time (memory-mapped)."""

    def __init__(self, files: dict):
        try:
            import torch
        except ImportError as e:
            path = next(iter(files.values()), BIN_FILE)
            raise ValueError(
                f"reading the PyTorch checkpoint {path} needs torch, which is not "
                f"installed; convert it to safetensors or install torch"
            ) from e
        self._torch = torch
        self.files = files
        self._loaded_path = None
        self._loaded = {}

    @classmethod
    def single_file(cls, path):
        """A reader for one unsharded pytorch_model.bin: its names come from loading it."""
        reader = cls({"": path})
        reader._load(path)
        reader.files = {name: path for name in reader._loaded}
        return reader

    def _load(self, path):
        self._loaded = {}  # drop the previous shard before loading the next
        try:
            self._loaded = self._torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise ValueError(f"cannot load PyTorch checkpoint {path}: {e}") from e
        self._loaded_path = path

    def _tensor(self, name):
        path = self.files[name]
        if path != self._loaded_path:
            self._load(path)
        return self._loaded[name]

    def shape(self, name):
        return tuple(self._tensor(name).shape)

    def get(self, name) -> np.ndarray:
        t = self._tensor(name)
        if not t.is_floating_point():
            raise ValueError(
                f"tensor '{name}' in {self.files[name]} has dtype {t.dtype}; the "
                f"exporter reads floating-point weights only"
            )
        return t.detach().to(self._torch.float32).numpy()


class Checkpoint:
    """The tensors of a Hugging Face checkpoint directory."""

    def __init__(self, hf_dir: str):
        self.hf_dir = hf_dir
        join = lambda name: os.path.join(hf_dir, name)  # noqa: E731
        if os.path.isfile(join(SAFETENSORS_INDEX)):
            self.source = join(SAFETENSORS_INDEX)
            self._reader = _SafetensorsFiles(_read_index(hf_dir, SAFETENSORS_INDEX))
        elif os.path.isfile(join(SAFETENSORS_FILE)):
            self.source = join(SAFETENSORS_FILE)
            self._reader = _SafetensorsFiles(self._single_safetensors(self.source))
        elif os.path.isfile(join(BIN_INDEX)):
            self.source = join(BIN_INDEX)
            self._reader = _TorchBinFiles(_read_index(hf_dir, BIN_INDEX))
        elif os.path.isfile(join(BIN_FILE)):
            self.source = join(BIN_FILE)
            self._reader = _TorchBinFiles.single_file(self.source)
        else:
            raise ValueError(
                f"no weight file in {hf_dir}: expected {SAFETENSORS_FILE}, "
                f"{SAFETENSORS_INDEX}, {BIN_FILE} or {BIN_INDEX}"
            )
        self._names = set(self._reader.files)

    @staticmethod
    def _single_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="numpy") as f:
                return {name: path for name in f.keys()}
        except Exception as e:
            raise ValueError(f"cannot open safetensors file {path}: {e}") from e

    def names(self) -> set:
        return set(self._names)

    def __contains__(self, name) -> bool:
        return name in self._names

    def _check(self, name):
        if name not in self._names:
            raise ValueError(
                f"tensor '{name}' not found in checkpoint {self.hf_dir} "
                f"(read from {os.path.basename(self.source)})"
            )

    def shape(self, name) -> tuple:
        self._check(name)
        return self._reader.shape(name)

    def get(self, name, expected_shape=None) -> np.ndarray:
        """The tensor as float32; with expected_shape, a mismatch raises ValueError naming it."""
        self._check(name)
        array = self._reader.get(name)
        if expected_shape is not None and tuple(array.shape) != tuple(expected_shape):
            raise ValueError(
                f"tensor '{name}' in checkpoint {self.hf_dir} has shape "
                f"{list(array.shape)}; config.json implies {list(expected_shape)}"
            )
        return array
