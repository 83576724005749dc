"""FastAttention: FlashAttention-2-class LLM inference for Volta, Turing, newer GPUs and CPUs.

import fastattention
fastattention.export_hf("hf_checkpoint/", "model/", tp=1, dtype="float16")
sess = fastattention.Session("model/", device="cpu")
new_tokens = sess.generate([[1, 15043, 29892]], max_new_tokens=32)
out = fastattention.ops.attention(q, k, v, causal=True)
"""

from fastattention._native import _C, WeightFileError

__version__ = "0.1.0"
__all__ = ["Session", "export_hf", "ops", "WeightFileError", "cuda_available", "__version__"]


def cuda_available() -> bool:
    """True when this build has CUDA kernels and a GPU is visible."""
    return bool(_C.cuda_built) and _C.cuda_device_count() > 0


def __getattr__(name):
    # Imported on first use: the exporter pulls in safetensors and tqdm, which `ops` users need not pay for.
    if name == "Session":
        from fastattention.session import Session

        return Session
    if name == "export_hf":
        from fastattention.export import export_hf

        return export_hf
    if name == "ops":
        import importlib

        return importlib.import_module("fastattention.ops")
    raise AttributeError(f"module 'fastattention' has no attribute {name!r}")
