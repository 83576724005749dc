"""Export Hugging Face checkpoints to the FastAttention weight format (docs/FORMAT.md).

    from fastattention.export import export_hf, read_tensor
    config = export_hf("path/to/hf_model", "path/to/out", tp=2, dtype="float16")
    embed = read_tensor("path/to/out/rank0/embed.weight.fat", upcast_bf16=True)

FasterTransformer checkpoints (config.ini + model.*.bin, any tensor-parallel split) convert with
export_ft("ft_models/2-gpu", "path/to/out", tp=1) (see fastattention.export.ft).
"""

from fastattention.export.format import (
    DTYPES,
    FatHeader,
    WeightFileError,
    bfloat16_bits_to_float32,
    float32_to_bfloat16_bits,
    read_header,
    read_tensor,
    write_tensor,
)
from fastattention.export.ft import export_ft
from fastattention.export.hf_config import SUPPORTED_ARCHITECTURES, runtime_config
from fastattention.export.hf_export import export_hf

__all__ = [
    "DTYPES",
    "FatHeader",
    "SUPPORTED_ARCHITECTURES",
    "WeightFileError",
    "bfloat16_bits_to_float32",
    "export_ft",
    "export_hf",
    "float32_to_bfloat16_bits",
    "read_header",
    "read_tensor",
    "runtime_config",
    "write_tensor",
]
