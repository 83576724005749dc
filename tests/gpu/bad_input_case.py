"""Bad-input calls on CUDA and CPU tensors, one at a time with a print before each (debugging
aid for the device machine), plus which C++ runtime libraries the process has loaded."""

import numpy as np
import torch

import fastattention
from fastattention import ops

libs = sorted(
    {
        line.split()[-1]
        for line in open("/proc/self/maps")
        if "libstdc++" in line or "libgcc_s" in line
    }
)
print("loaded:", *libs, sep="\n  ")
q = torch.randn(1, 16, 4, 128, device="cuda", dtype=torch.float16)
qc = torch.randn(1, 16, 4, 64)
cases = [
    (
        "cpu: number in message",
        lambda: fastattention._C.fmha_forward(
            qc[0],
            qc[0],
            qc[0],
            qc[0],
            None,
            cu_seqlens_q=np.array([0, 17], dtype=np.int32),
            cu_seqlens_k=np.array([0, 16], dtype=np.int32),
        ),
    ),
    ("cuda: impl 999", lambda: ops.attention(q, q, q, impl="999")),
    (
        "cuda: head dim 48",
        lambda: ops.attention(
            *(torch.randn(1, 16, 4, 48, device="cuda", dtype=torch.float16),) * 3
        ),
    ),
]
for label, fn in cases:
    print("calling:", label, flush=True)
    try:
        fn()
        print("  no error!", flush=True)
    except ValueError as e:
        print("  ValueError:", e, flush=True)
