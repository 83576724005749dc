"""One split-KV decode attention launch, for compute-sanitizer and ncu on the GPU machine.

    python3 tests/gpu/decode_case.py [--kv 300] [--batch 2] [--sq 4] [--hq 8] [--hk 2]
        [--block 16 | --block 0 (contiguous)] [--dtype float16] [--impl decode]
        [--splits 3] [--repeat 1]

Checks the output against a float32 PyTorch reference and exits 1 on a mismatch.
"""

import argparse
import math
import sys

import torch

import fastattention


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kv", type=int, default=300)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--sq", type=int, default=4)
    ap.add_argument("--hq", type=int, default=8)
    ap.add_argument("--hk", type=int, default=2)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--block", type=int, default=16, help="paged block size; 0 = contiguous KV")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--impl", default="decode")
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    b, kv, bs = a.batch, a.kv, a.block
    q = torch.randn(b * a.sq, a.hq, a.d, device="cuda", dtype=dtype)
    cu_q = torch.arange(b + 1, device="cuda", dtype=torch.int32) * a.sq
    if bs:
        per = (kv + bs - 1) // bs
        k = torch.randn(b * per, bs, a.hk, a.d, device="cuda", dtype=dtype)
        v = torch.randn_like(k)
        table = torch.randperm(b * per, device="cuda").to(torch.int32).view(b, per)
        layout = dict(
            block_table=table, seqlens_k=torch.full((b,), kv, device="cuda", dtype=torch.int32)
        )
        ks = k[table.long()].reshape(b, per * bs, a.hk, a.d)[:, :kv]
        vs = v[table.long()].reshape(b, per * bs, a.hk, a.d)[:, :kv]
    else:
        k = torch.randn(b * kv, a.hk, a.d, device="cuda", dtype=dtype)
        v = torch.randn_like(k)
        layout = dict(cu_seqlens_k=torch.arange(b + 1, device="cuda", dtype=torch.int32) * kv)
        ks, vs = k.view(b, kv, a.hk, a.d), v.view(b, kv, a.hk, a.d)
    out = torch.full_like(q, float("nan"))
    lse = torch.full((a.hq, b * a.sq), float("nan"), device="cuda")
    for _ in range(a.repeat):
        fastattention._C.fmha_forward(
            q,
            k,
            v,
            out,
            lse,
            cu_seqlens_q=cu_q,
            causal=True,
            impl=a.impl,
            num_splits=a.splits,
            max_seqlen_q=a.sq,
            max_seqlen_k=kv,
            stream=torch.cuda.current_stream().cuda_stream,
            **layout,
        )
    torch.cuda.synchronize()
    rep = a.hq // a.hk
    qf = q.view(b, a.sq, a.hq, a.d).float().transpose(1, 2)
    kf = ks.float().repeat_interleave(rep, dim=2).transpose(1, 2)
    vf = vs.float().repeat_interleave(rep, dim=2).transpose(1, 2)
    s = qf @ kf.transpose(-1, -2) / math.sqrt(a.d)
    i = torch.arange(a.sq, device="cuda")[:, None] + kv - a.sq
    s = s.masked_fill(torch.arange(kv, device="cuda")[None, :] > i, float("-inf"))
    ref = (torch.softmax(s, -1) @ vf).transpose(1, 2).reshape(b * a.sq, a.hq, a.d)
    err = (out.float() - ref).abs().max().item()
    print(f"decode_case: max error {err:.3g} vs float32 PyTorch")
    return 0 if err < 3e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
