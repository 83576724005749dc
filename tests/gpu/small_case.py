"""One small attention call on the GPU through a given MMA path (for compute-sanitizer and ncu).

    python tests/gpu/small_case.py IMPL [SEQLEN]
"""
import sys

import torch

from fastattention import ops

impl = sys.argv[1]
s = int(sys.argv[2]) if len(sys.argv) > 2 else 130
torch.manual_seed(0)
q, k, v = (torch.randn(2, s, 4, 128, device="cuda", dtype=torch.float16) for _ in range(3))
out = ops.attention(q, k, v, causal=True, impl=impl)
ref = torch.nn.functional.scaled_dot_product_attention(
    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2)
torch.cuda.synchronize()
err = (out.float() - ref.float()).abs().max().item()
print(f"impl {impl} seqlen {s}: max abs diff vs SDPA {err:.3g}")
sys.exit(0 if err < 1e-2 else 1)
