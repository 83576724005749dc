"""End to end: a float64 numpy decoder that reads ONLY an exported model directory (config.json and
the rank files, interpreted as docs/FORMAT.md says) must reproduce the Hugging Face logits.

This checks what the bit-exact tests cannot: that the config the exporter writes (RoPE theta and
scaling, norm eps, biases, sliding window, GQA layout per rank, vocab padding) carries everything
the runtime needs. Tensor parallelism is simulated: each rank computes its column-parallel slice,
row-parallel partial outputs are summed over ranks, vocab-parallel logits are concatenated.
"""

import json
import math

import numpy as np
import pytest

from fastattention.export import read_tensor

torch = pytest.importorskip("torch")


class ExportedReference:
    def __init__(self, path):
        self.cfg = json.loads((path / "config.json").read_text())
        self.path = path

    def w(self, rank, name):
        return read_tensor(self.path / f"rank{rank}" / f"{name}.fat", upcast_bf16=True).astype(
            np.float64
        )

    def inv_freq(self):
        c, rope = self.cfg, self.cfg["rope"]
        d = rope["rotary_dim"]
        inv = rope["theta"] ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        s = rope["scaling"]
        if s["type"] == "linear":
            inv = inv / s["factor"]
        elif s["type"] == "llama3":
            orig = s["original_max_position"]
            low_wl, high_wl = orig / s["low_freq_factor"], orig / s["high_freq_factor"]
            wl = 2 * math.pi / inv
            smooth = (orig / wl - s["low_freq_factor"]) / (
                s["high_freq_factor"] - s["low_freq_factor"]
            )
            scaled = np.where(wl > low_wl, inv / s["factor"], inv)
            mid = (wl >= high_wl) & (wl <= low_wl)
            inv = np.where(mid, (1 - smooth) * scaled / s["factor"] + smooth * scaled, scaled)
        else:
            assert s["type"] == "none" and c["max_position_embeddings"] > 0
        return inv

    def rope(self, x, positions):  # x: [T, heads, D], rotate halves (neox)
        assert self.cfg["rope"]["style"] == "neox"
        ang = positions[:, None] * self.inv_freq()[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    def norm(self, x, weight):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.cfg["norm_eps"]) * weight

    def attention(self, q, k, v):  # q: [T, hq, D], k/v: [T, hk, D]
        t, hq, d = q.shape
        group = hq // k.shape[1]
        i, j = np.arange(t)[:, None], np.arange(t)[None, :]
        visible = j <= i
        if self.cfg["sliding_window"] is not None:
            visible &= j >= i - (self.cfg["sliding_window"] - 1)
        out = np.empty_like(q)
        for h in range(hq):
            s = q[:, h] @ k[:, h // group].T / math.sqrt(d)
            s = np.where(visible, s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            out[:, h] = (p / p.sum(-1, keepdims=True)) @ v[:, h // group]
        return out

    def logits(self, ids):
        c = self.cfg
        tp, d, vr = c["tp_size"], c["head_dim"], c["vocab_size_padded"] // c["tp_size"]
        hq, hk = c["num_heads"] // tp, max(c["num_kv_heads"] // tp, 1)
        # vocab-parallel embedding: each rank contributes the rows it owns
        x = sum(
            np.where(
                ((ids >= r * vr) & (ids < (r + 1) * vr))[:, None],
                self.w(r, "embed.weight")[np.clip(ids - r * vr, 0, vr - 1)],
                0.0,
            )
            for r in range(tp)
        )
        pos = np.arange(len(ids), dtype=np.float64)
        act = {"silu": lambda g: g / (1 + np.exp(-g))}[c["activation"]]
        for layer in range(c["num_layers"]):
            p = f"layers.{layer}."
            attn = 0.0
            for r in range(tp):
                h = self.norm(x, self.w(r, p + "attn_norm.weight"))
                qkv = h @ self.w(r, p + "attn.qkv.weight").T
                if c["qkv_bias"]:
                    qkv = qkv + self.w(r, p + "attn.qkv.bias")
                q = qkv[:, : hq * d].reshape(-1, hq, d)
                k = qkv[:, hq * d : (hq + hk) * d].reshape(-1, hk, d)
                v = qkv[:, (hq + hk) * d :].reshape(-1, hk, d)
                o = self.attention(self.rope(q, pos), self.rope(k, pos), v)
                attn = attn + o.reshape(len(ids), -1) @ self.w(r, p + "attn.o.weight").T
            x = x + attn + (self.w(0, p + "attn.o.bias") if c["o_bias"] else 0.0)
            ffn = 0.0
            for r in range(tp):
                h = self.norm(x, self.w(r, p + "ffn_norm.weight"))
                gu = h @ self.w(r, p + "ffn.gate_up.weight").T
                if c["mlp_bias"]:
                    gu = gu + self.w(r, p + "ffn.gate_up.bias")
                i_r = c["intermediate_size"] // tp
                ffn = ffn + (act(gu[:, :i_r]) * gu[:, i_r:]) @ self.w(r, p + "ffn.down.weight").T
            x = x + ffn + (self.w(0, p + "ffn.down.bias") if c["mlp_bias"] else 0.0)
        head = "embed.weight" if c["tie_word_embeddings"] else "lm_head.weight"
        logits = np.concatenate(
            [self.norm(x, self.w(r, "final_norm.weight")) @ self.w(r, head).T for r in range(tp)],
            axis=1,
        )
        assert not logits[:, c["vocab_size"] :].any()  # zero padding rows
        return logits[:, : c["vocab_size"]]


@pytest.mark.parametrize(
    "name, tp",
    [
        ("llama", 1),
        ("llama", 4),
        ("llama_kv4", 8),
        ("llama_bias", 2),
        ("qwen2", 2),
        ("qwen2_swa", 1),
        ("mistral", 2),
    ],
)
def test_exported_model_reproduces_hf_logits(exported_model_factory, name, tp):
    exp = exported_model_factory(name, tp=tp, dtype="float32")
    model = exp.hf.load_model()
    rng = np.random.default_rng(7)
    ids = rng.integers(0, exp.config["vocab_size"], size=21)  # longer than the windows (8)
    with torch.no_grad():
        want = model(torch.from_numpy(ids)[None]).logits[0].double().numpy()
    got = ExportedReference(exp.path).logits(ids)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale, np.abs(got - want).max() / scale
