"""Timings of the CUDA rope / KV-cache write / sampling kernels (sampling, fused rope + KV-cache write) on the local GPU.

    python3 tests/gpu/bench_rope_kv_sampling.py

Device time of the kernels alone (torch.profiler's CUDA activity, mean over 50 calls after 5
warm-ups): a call through the Python binding costs tens of microseconds of host time, which
CUDA events around a single call would measure instead. Prints one line per case.
"""

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from fastattention import _C


def timed(fn, reps=50):
    """Mean device microseconds of the kernels fn launches (all kernels of one call summed)."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    total = sum(e.device_time_total for e in prof.events() if e.device_type == DeviceType.CUDA)
    return total / reps


def main():
    s = torch.cuda.current_stream().cuda_stream
    print(torch.cuda.get_device_name())
    for V in (32000, 128256):
        for B in (1, 64):
            logits = torch.randn(B, V, device="cuda") * 3
            out = torch.empty(B, device="cuda", dtype=torch.int32)
            for name, kw in [
                ("greedy", {}),
                ("temperature", dict(temperature=0.8)),
                ("top_k=50", dict(temperature=0.8, top_k=50)),
                ("top_p=0.9", dict(temperature=0.8, top_p=0.9)),
                ("top_k=50,top_p=0.9", dict(temperature=0.8, top_k=50, top_p=0.9)),
            ]:
                us = timed(lambda: _C.kernel_sample(logits, out, seed=1, step=2, stream=s, **kw))
                print(f"sample V={V} B={B} {name}: {us:.1f} us")
            probs = torch.softmax(logits / 0.8, -1)
            us = timed(lambda: torch.multinomial(probs, 1))
            print(f"  (torch.multinomial on ready probs, V={V} B={B}: {us:.1f} us)")
    for T in (1, 64, 4096):
        hq, hk, d, bs = 32, 8, 128, 16
        buf = torch.randn(T, (hq + 2 * hk) * d, device="cuda", dtype=torch.float16)
        q = buf[:, : hq * d].view(T, hq, d)
        k = buf[:, hq * d : (hq + hk) * d].view(T, hk, d)
        v = buf[:, (hq + hk) * d :].view(T, hk, d)
        blocks = T // bs + 2
        kc = torch.empty(blocks, bs, hk, d, device="cuda", dtype=torch.float16)
        vc = torch.empty_like(kc)
        pos = torch.arange(T, device="cuda", dtype=torch.int32)
        slots = torch.arange(T, device="cuda", dtype=torch.int32)
        us = timed(lambda: _C.kernel_rope_kv_cache_write(q, k, v, pos, kc, vc, slots, stream=s))
        moved = T * d * 2 * (2 * (hq + hk) + 3 * hk)  # q, k read + written; v read; 2 cache rows
        print(
            f"rope_kv_cache_write T={T} Hq={hq} Hk={hk} D={d} fp16: {us:.1f} us, "
            f"{moved / us / 1e3:.0f} GB/s"
        )
        us = timed(lambda: _C.kernel_rope(q, pos, stream=s))
        print(f"rope q only T={T}: {us:.1f} us")


if __name__ == "__main__":
    main()
