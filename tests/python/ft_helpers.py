"""What the FasterTransformer import tests share (test_export_ft.py: GPT-NeoX, test_export_ft_gpt.py
and tests/mpi/test_ft_gpt_tp.py: GPT-2): seeded weights for a tiny transformers model, an export's
tensors and tp=2 split, a copy of an FT directory to damage, config.ini edits, and the oracle
checks of an exported model's logits and greedy tokens against transformers'. Needs torch (the
test files skip without it)."""

from __future__ import annotations

import configparser
import pathlib
import shutil

import numpy as np
import torch

from fastattention.export import read_tensor

LOGIT_ATOL = 2e-5  # float32 logits of the export against transformers'


def randomize(model, seed: int, norm_marks: tuple):
    """Seeded values for every parameter: weights of the norms (names holding one of norm_marks)
    1 + 0.2 * N(0, 1), everything else 0.1 * N(0, 1). Returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if any(m in name for m in norm_marks) else 0.1 * noise)
    return model.eval()


def exported_tensors(model_dir, rank: int) -> dict:
    """{tensor name: array} of rank `rank` of an exported model directory."""
    d = pathlib.Path(model_dir) / f"rank{rank}"
    return {p.name[:-4]: read_tensor(p) for p in sorted(d.glob("*.fat"))}


def tp2_parts(name: str, full: np.ndarray) -> list:
    """The two tp=2 ranks' parts of the tp=1 tensor `name`, split as docs/FORMAT.md says: the
    fused QKV by heads (each rank its half of the q, of the k and of the v rows), the FFN up rows,
    the attention-output and FFN-down columns, the vocabulary rows (padded with zero rows to an
    even count); every other tensor whole on both ranks."""
    if name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
        q, k, v = np.split(full, 3, axis=0)
        rows = q.shape[0] // 2
        return [np.concatenate([x[r * rows : (r + 1) * rows] for x in (q, k, v)]) for r in (0, 1)]
    if name.endswith(("ffn.up.weight", "ffn.up.bias")):
        return np.split(full, 2, axis=0)
    if name.endswith(("attn.o.weight", "ffn.down.weight")):
        return np.split(full, 2, axis=1)
    if name in ("embed.weight", "lm_head.weight"):
        padding = np.zeros((-full.shape[0] % 2, full.shape[1]), full.dtype)
        return np.split(np.concatenate([full, padding]), 2, axis=0)
    return [full, full]


def assert_tp2_split(one: dict, ranks: list) -> None:
    """The tp=2 ranks' tensors `ranks` hold the same names as the tp=1 tensors `one`, split as
    tp2_parts says."""
    assert set(ranks[0]) == set(one) == set(ranks[1])
    for name, full in one.items():
        want = tp2_parts(name, full)
        for r in (0, 1):
            np.testing.assert_array_equal(ranks[r][name], want[r], err_msg=f"{name} rank {r}")


def copy_to_damage(ft_dir: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """A fresh copy of the FT directory ft_dir, tmp_path / its name (e.g. 2-gpu), for a test to
    damage."""
    d = tmp_path / ft_dir.name
    shutil.copytree(ft_dir, d)
    return d


def edit_ft_ini(d, section: str, **changes) -> None:
    """Sets (or, for a value of None, removes) keys of [section] in d/config.ini."""
    ini = configparser.ConfigParser()
    ini.read(d / "config.ini")
    for key, value in changes.items():
        if value is None:
            ini[section].pop(key)
        else:
            ini[section][key] = value
    with open(d / "config.ini", "w") as f:
        ini.write(f)


def assert_logits_match(model, session, rng, lengths, label: str) -> None:
    """session.logits equals the transformers model's (within LOGIT_ATOL) on a random prompt of
    each length (token ids drawn from rng); label starts the failure message."""
    for length in lengths:
        ids = rng.integers(0, model.config.vocab_size, size=length).tolist()
        with torch.inference_mode():
            ref = model(torch.tensor([ids])).logits[0].numpy()
        ours = session.logits(ids)
        assert ours.shape == ref.shape and np.abs(ref).max() > 0.5
        diff = float(np.abs(ours.astype(np.float64) - ref).max())
        assert diff < LOGIT_ATOL, f"{label}, prompt of {length}: {diff}"


def assert_greedy_matches(model, session, prompt: list, max_new_tokens: int) -> None:
    """session.generate's greedy tokens for `prompt` equal transformers' (no stop token)."""
    with torch.inference_mode():
        expected = model.generate(
            torch.tensor([prompt]),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=None,
            pad_token_id=0,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )
    assert session.generate([prompt], max_new_tokens) == [expected[0, len(prompt) :].tolist()]
