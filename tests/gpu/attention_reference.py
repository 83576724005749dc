"""The plain-PyTorch attention the GPU attention tests compare against: explicit masks, float64
when upcast (the reference), else the inputs' dtype (the "plain implementation" whose error the
kernels may at most double)."""

import math

import torch


def attention_reference(q, k, v, causal, window, alibi, upcast, scale=None):
    """(B, Sq, Hq, D) attention with explicit masks; float64 when upcast, else the input dtype."""
    b, sq, hq, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    if upcast:
        q, k, v = q.double(), k.double(), v.double()
    k = k.repeat_interleave(hq // hk, dim=2)
    v = v.repeat_interleave(hq // hk, dim=2)
    scale = scale or 1.0 / math.sqrt(d)
    s = torch.einsum("bqhd,bkhd->bhqk", q * scale, k)
    i = torch.arange(sq, device=q.device)[:, None] + (sk - sq)
    j = torch.arange(sk, device=q.device)[None, :]
    visible = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
    left, right = window
    if causal:
        right = 0 if right < 0 else min(right, 0)
    if right >= 0:
        visible &= j <= i + right
    if left >= 0:
        visible &= j >= i - left
    if alibi is not None:
        s = s - (alibi.to(s.dtype)[None, :, None, None] * (i - j).abs()[None, None].to(s.dtype))
    s = s.masked_fill(~visible, float("-inf"))
    # 16-bit inputs: softmax in float32, as plain PyTorch code does
    p = torch.softmax(s.float() if not upcast else s, dim=-1).to(s.dtype)
    p = torch.nan_to_num(p, nan=0.0)  # rows with no visible key
    out = torch.einsum("bhqk,bkhd->bqhd", p, v)
    lse = torch.logsumexp(s.double(), dim=-1)
    return out, lse


def attention_reference_unbatched(q, k, v, causal, window, alibi, upcast, scale=None):
    """One sequence: q (Sq, Hq, D), k / v (Sk, Hk, D), alibi [Hq] or None; lse (Hq, Sq)."""
    out, lse = attention_reference(q[None], k[None], v[None], causal, window, alibi, upcast, scale)
    return out[0], lse[0]
