"""FastAttention: FlashAttention-2-class LLM inference for Volta, Turing, newer GPUs and CPUs."""
from fastattention._native import _C, WeightFileError

__version__ = "0.1.0"
__all__ = ["_C", "WeightFileError", "__version__"]
