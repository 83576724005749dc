"""Bad-input calls on CUDA tensors, one at a time with a print before each (debugging aid)."""
import torch

from fastattention import ops

q = torch.randn(1, 16, 4, 128, device="cuda", dtype=torch.float16)
for label, args, kw in [
    ("impl 999", (q, q, q), dict(impl="999")),
    ("head dim 48", (torch.randn(1, 16, 4, 48, device="cuda", dtype=torch.float16),) * 3, {}),
]:
    print("calling:", label, flush=True)
    try:
        ops.attention(*args, **kw)
        print("  no error!", flush=True)
    except ValueError as e:
        print("  ValueError:", e, flush=True)
