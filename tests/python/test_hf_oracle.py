"""The end-to-end oracle: Hugging Face transformers.

Random-initialised transformers models (conftest.py's MODEL_SPECS: Llama with GQA, Llama with
llama3 RoPE scaling, Llama with every bias and tied embeddings, Qwen2 with QKV bias, Qwen2 and
Mistral with a sliding window (8) shorter than the prompts) are saved, exported with export_hf in
float32 and loaded in a Session. Against transformers (float32, in the same process):

  * logits at every prompt position match (max abs diff < 1e-3);
  * 16 incremental decode steps match: transformers feeds its greedy token with past_key_values;
    we run the same tokens through the KV-cache path one token per forward pass
    (prefill_chunk_tokens=1, so each token attends to the paged cache, as a decode step does);
  * greedy generate() returns the same tokens as transformers' generate(do_sample=False);
  * a batch of 3 prompts of different lengths generates what transformers generates for each,
    and, with the config's EOS as a stop token, stops where transformers' generate() stops.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fastattention.session import Session  # noqa: E402

MODELS = ["llama", "llama_kv4", "llama_bias", "qwen2", "qwen2_swa", "mistral"]
PROMPT_LEN = 21  # longer than the sliding window (8) of qwen2_swa and mistral
DECODE_STEPS = 16
NEW_TOKENS = 20
LOGIT_ATOL = 1e-3


class Case:
    """One model: its export, the transformers oracle and a session."""

    def __init__(self, exported):
        self.exported = exported
        self.config = exported.config
        self.vocab = int(self.config["vocab_size"])
        self.hf = exported.hf.load_model(torch.float32)
        # EOS is an ordinary token unless a test asks to stop at it (as in our generate()).
        self.hf.generation_config.eos_token_id = None
        self.session = Session(exported.path, max_batch=4, max_seq_len=128, kv_block_size=4)

    def prompt(self, length: int, seed: int) -> list:
        rng = np.random.default_rng(seed)
        return rng.integers(0, self.vocab, size=length).tolist()

    def hf_logits(self, ids) -> np.ndarray:
        with torch.inference_mode():
            return self.hf(torch.tensor([ids])).logits[0].float().numpy()

    def hf_greedy_steps(self, ids, steps: int):
        """transformers' greedy decode with past_key_values: (logits of each step, tokens)."""
        logits, tokens = [], []
        with torch.inference_mode():
            out = self.hf(torch.tensor([ids]), use_cache=True)
            for _ in range(steps + 1):
                row = out.logits[0, -1].float().numpy()
                logits.append(row)
                tokens.append(int(row.argmax()))
                out = self.hf(
                    torch.tensor([[tokens[-1]]]),
                    past_key_values=out.past_key_values,
                    use_cache=True,
                )
        return np.stack(logits), tokens

    def hf_generate(self, ids, new_tokens: int, stop_at_eos: bool = False) -> list:
        """transformers' greedy generate(). Without stop_at_eos, EOS is an ordinary token (as in
        our generate() without stop_tokens); min_new_tokens would not do: it masks EOS out."""
        extra = dict(eos_token_id=self.config["eos_token_id"]) if stop_at_eos else {}
        with torch.inference_mode():
            out = self.hf.generate(
                torch.tensor([ids]),
                do_sample=False,
                max_new_tokens=new_tokens,
                pad_token_id=0,
                **extra,
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            )
        return out[0, len(ids) :].tolist()


@pytest.fixture(scope="module")
def case(request, exported_model_factory):
    cache = {}

    def get(name: str) -> Case:
        if name not in cache:
            cache[name] = Case(exported_model_factory(name, dtype="float32"))
        return cache[name]

    return get


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.mark.parametrize("name", MODELS)
def test_prompt_logits_match_transformers(case, name):
    c = case(name)
    for length, seed in ((PROMPT_LEN, 1), (1, 2), (40, 3)):
        ids = c.prompt(length, seed)
        ref = c.hf_logits(ids)
        ours = c.session.logits(ids)
        assert ours.shape == (length, c.vocab)
        assert np.abs(ref).max() > 0.5  # the comparison is not between near-zero numbers
        assert max_abs_diff(ours, ref) < LOGIT_ATOL, f"{name}, prompt of {length}"


@pytest.mark.parametrize("name", MODELS)
def test_incremental_decode_logits_match_transformers(case, name):
    c = case(name)
    prompt = c.prompt(PROMPT_LEN, 4)
    ref_logits, ref_tokens = c.hf_greedy_steps(prompt, DECODE_STEPS)
    # One token per forward pass: each attends to the keys already in the paged KV cache.
    stepper = Session(c.exported.path, max_seq_len=128, kv_block_size=4, prefill_chunk_tokens=1)
    ours = stepper.logits(prompt + ref_tokens[:DECODE_STEPS])[PROMPT_LEN - 1 :]
    assert ours.shape == ref_logits.shape == (DECODE_STEPS + 1, c.vocab)
    for step in range(DECODE_STEPS + 1):
        assert max_abs_diff(ours[step], ref_logits[step]) < LOGIT_ATOL, f"{name}, step {step}"
    # generate()'s own decode loop takes the same greedy path.
    assert c.session.generate([prompt], DECODE_STEPS + 1)[0] == ref_tokens


@pytest.mark.parametrize("name", MODELS)
def test_greedy_generate_matches_transformers(case, name):
    c = case(name)
    prompt = c.prompt(PROMPT_LEN, 5)
    ref = c.hf_generate(prompt, NEW_TOKENS)
    ours = c.session.generate([prompt], NEW_TOKENS)[0]
    assert len(ours) == NEW_TOKENS
    assert ours == ref
    assert len(set(ref)) > 1  # a model stuck on one token would make this test weak


@pytest.mark.parametrize("name", ["llama", "qwen2", "mistral"])
def test_batch_of_three_prompts_matches_transformers(case, name):
    c = case(name)
    prompts = [c.prompt(n, 10 + n) for n in (PROMPT_LEN, 5, 13)]
    refs = [c.hf_generate(p, NEW_TOKENS) for p in prompts]
    assert c.session.generate(prompts, NEW_TOKENS) == refs
    eos = c.config["eos_token_id"]
    refs = [c.hf_generate(p, NEW_TOKENS, stop_at_eos=True) for p in prompts]
    assert c.session.generate(prompts, NEW_TOKENS, stop_tokens=eos) == refs


def test_stops_at_eos_where_transformers_does(case):
    """A prompt whose greedy continuation emits EOS (id 2) as its third token."""
    c = case("mistral")
    prompt = c.prompt(13, 23)
    free = c.hf_generate(prompt, NEW_TOKENS)
    assert free[2] == 2 and c.config["eos_token_id"] == [2]  # the premise of this test
    assert c.hf_generate(prompt, NEW_TOKENS, stop_at_eos=True) == free[:3]
    assert c.session.generate([prompt], NEW_TOKENS, stop_tokens=[2]) == [free[:3]]
