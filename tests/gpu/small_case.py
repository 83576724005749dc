"""One small attention call on the GPU through a given MMA path (for compute-sanitizer and ncu).

    python tests/gpu/small_case.py IMPL [SEQLEN]

The reference is a plain float32 matmul-softmax-matmul, so that no other attention kernel runs
under the sanitizer.
"""

import math
import sys

import torch

from fastattention import ops

impl = sys.argv[1]
s = int(sys.argv[2]) if len(sys.argv) > 2 else 130
torch.manual_seed(0)
q, k, v = (torch.randn(2, s, 4, 128, device="cuda", dtype=torch.float16) for _ in range(3))
out = ops.attention(q, k, v, causal=True, impl=impl)
qf, kf, vf = (x.float().transpose(1, 2) for x in (q, k, v))
scores = (qf @ kf.transpose(-1, -2)) / math.sqrt(128)
scores = scores.masked_fill(
    torch.ones(s, s, dtype=torch.bool, device="cuda").triu(1), float("-inf")
)
ref = (torch.softmax(scores, dim=-1) @ vf).transpose(1, 2)
torch.cuda.synchronize()
err = (out.float() - ref).abs().max().item()
print(f"impl {impl} seqlen {s}: max abs diff vs float32 reference {err:.3g}")
sys.exit(0 if err < 1e-2 else 1)
