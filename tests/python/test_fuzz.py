"""Fuzz suite (issue 17): Hypothesis mutates config.json values (types, ranges, nesting,
encodings), .fat headers and sizes, and the Session / generate / ops.attention / CLI arguments.

Every case must end in a Python exception that names the problem, or a correct result; a crash,
a hang, or a non-finite output from finite input fails the suite. Each case runs in a child
process (tests/python/fuzz_worker.py, restarted after a crash) with a timeout.

Bounded for CI (fixed seed, 500 examples per test: about 30-60 s on 2 cores). Longer runs:
    FASTATTN_FUZZ_EXAMPLES=2000 pytest tests/python/test_fuzz.py     # examples per test (x 1/20 CLI)
    FASTATTN_FUZZ_SEED=random ...                                     # a new random seed each run
"""

from __future__ import annotations

import base64
import json
import math
import os
import pathlib
import select
import subprocess
import sys

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hostile_model import tiny_config, write_tiny_model  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLES = int(os.environ.get("FASTATTN_FUZZ_EXAMPLES", "500"))
RANDOM_SEED = os.environ.get("FASTATTN_FUZZ_SEED", "") == "random"
CASE_TIMEOUT = float(os.environ.get("FASTATTN_FUZZ_TIMEOUT", "30"))
# Per-process address-space cap of the worker: a request for absurd memory must fail cleanly
# (MemoryError), not take the shared machine's RAM.
WORKER_MEMORY = 4 << 30

ERROR_TYPES = {"ValueError", "WeightFileError", "TypeError", "MemoryError"}


def fuzz_settings(examples: int):
    return settings(
        max_examples=max(1, examples),
        deadline=None,
        derandomize=not RANDOM_SEED,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


class Worker:
    """One fuzz_worker.py child; run() sends a case and waits for its answer or the timeout."""

    def __init__(self):
        self.proc = None

    def start(self):
        code = (
            f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({WORKER_MEMORY}, "
            f"{WORKER_MEMORY})); import runpy, sys; sys.path.insert(0, {str(HERE)!r}); "
            f"runpy.run_path({str(HERE / 'fuzz_worker.py')!r}, run_name='__main__')"
        )
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def run(self, case: dict, timeout: float = CASE_TIMEOUT) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            pytest.fail(f"HANG: no answer in {timeout} s to {_describe(case)}")
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait()
            err = self.proc.stderr.read()[-3000:]
            self.proc = None
            pytest.fail(f"CRASH (exit status {rc}) on {_describe(case)}\n{err}")
        return json.loads(line)


def _describe(case: dict) -> str:
    text = json.dumps(case)
    return text if len(text) < 1500 else text[:1500] + "..."


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "model"
    write_tiny_model(path)
    return str(path)


def judge_session(answer: dict, case: dict, names: list[str]) -> None:
    if answer["outcome"] == "ok":
        assert answer["finite"], f"non-finite logits from finite input: {_describe(case)}"
        assert answer["in_range"], f"token ids out of the vocabulary: {_describe(case)}"
        return
    where = f"{answer['type']}: {answer['message']}\n{_describe(case)}"
    assert answer["type"] in ERROR_TYPES, f"unexpected exception {where}\n{answer['traceback']}"
    msg = answer["message"]
    assert msg and len(msg) < 2000, f"empty or flooding message: {where}"
    assert any(n in msg for n in names), f"the message names none of {names}: {where}"


# ------------------------------------------------------------------------------ config.json

CONFIG_PATHS = [(k,) for k in tiny_config() if k not in ("format", "format_version", "rope")] + [
    ("format",),
    ("format_version",),
    ("rope",),
    ("rope", "theta"),
    ("rope", "style"),
    ("rope", "rotary_dim"),
    ("rope", "scaling"),
    ("rope", "scaling", "type"),
    ("rope", "scaling", "factor"),
    ("rope", "scaling", "original_max_position"),
    ("rope", "scaling", "low_freq_factor"),
    ("rope", "scaling", "high_freq_factor"),
    ("eos_token_id",),
    ("bos_token_id",),
    ("sliding_window",),
    ("position_embedding",),
    ("unknown_key",),
]

RAW_VALUES = [
    "1e400",
    "-1e400",
    "1e-400",
    "9" * 5000,
    "-" + "9" * 30,
    "NaN",
    "Infinity",
    '"\\ud800"',
    "-0",
    "0.0",
    "1.5",
    "[]",
    "{}",
    '""',
    "1e38",
    "1e39",
    "1e-38",
    "1e-45",
    str(2**63),
    str(2**64),
    str(2**31),
    str(-(2**63) - 1),
]
json_leaf = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.booleans(),
    st.none(),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
raw_value = st.one_of(
    json_value.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(RAW_VALUES).map(str.encode),
    st.integers(min_value=1, max_value=150_000).map(lambda n: b"[" * n + b"]" * n),
    st.binary(min_size=1, max_size=8).map(lambda b: b'"' + b.replace(b'"', b"") + b'"'),
    st.sampled_from(
        [
            "neox",
            "interleaved",
            "linear",
            "dynamic",
            "llama3",
            "learned",
            "rotary",
            "rmsnorm",
            "layernorm",
            "gelu",
            "silu",
            "float16",
            "bfloat16",
        ]
    ).map(lambda s: json.dumps(s).encode()),
)
# Well-formed rope objects with extreme numbers: type checks pass, so the ranges are what decides.
extreme = st.one_of(st.floats(1e-38, 3e38), st.sampled_from([1e-38, 0.5, 1.0, 8.0, 1e4, 3e38]))
rope_value = st.fixed_dictionaries(
    {"theta": extreme, "style": st.sampled_from(["neox", "interleaved"])},
    optional={
        "rotary_dim": st.sampled_from([2, 4, 8, 16]),
        "scaling": st.fixed_dictionaries(
            {"type": st.sampled_from(["linear", "dynamic", "llama3", "none"]), "factor": extreme},
            optional={
                "low_freq_factor": extreme,
                "high_freq_factor": extreme,
                "original_max_position": st.integers(1, 2**31),
            },
        ),
    },
).map(lambda v: json.dumps(v).encode())


def mutated_config(path, value: bytes | None) -> bytes:
    cfg = tiny_config()
    node = cfg
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    marker = "@@FUZZ@@"
    if value is None:
        node.pop(path[-1], None)
        return json.dumps(cfg).encode()
    node[path[-1]] = marker
    return json.dumps(cfg).encode().replace(json.dumps(marker).encode(), value)


@fuzz_settings(EXAMPLES)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(CONFIG_PATHS), st.one_of(st.none(), raw_value)),
            st.tuples(st.just(("rope",)), rope_value),
        ),
        min_size=1,
        max_size=2,
    )
)
def test_fuzz_config(worker, model_dir, edits):
    text = None
    for path, value in edits[:1]:
        text = mutated_config(path, value)
    if len(edits) > 1:  # a second edit on top of the first, when the first left valid JSON
        try:
            cfg = json.loads(text)
            path, value = edits[1]
            marker = "@@FUZZ2@@"
            node = cfg
            for key in path[:-1]:
                node = node.setdefault(key, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node[path[-1]] = marker
            text = (
                json.dumps(cfg)
                .encode()
                .replace(json.dumps(marker).encode(), value if value is not None else b"null")
            )
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
    case = {
        "kind": "session",
        "model_dir": model_dir,
        "config_b64": base64.b64encode(text).decode(),
    }
    judge_session(
        worker.run(case),
        case,
        ["config.json", ".fat", "max_seq_len", "prompt", "KV cache", "position"],
    )


# ------------------------------------------------------------------------------- .fat files

FAT_FILES = [
    "embed.weight.fat",
    "final_norm.weight.fat",
    "layers.0.attn.qkv.weight.fat",
    "lm_head.weight.fat",
    "layers.0.ffn.down.weight.fat",
    "layers.0.ffn_norm.weight.fat",
]


@fuzz_settings(EXAMPLES)
@given(
    file=st.sampled_from(FAT_FILES),
    set_bytes=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=4),
    truncate=st.one_of(st.none(), st.integers(0, 200), st.integers(0, 1 << 20)),
    append=st.sampled_from([0, 0, 1, 7, 64, 4096]),
)
def test_fuzz_fat_files(worker, model_dir, file, set_bytes, truncate, append):
    fat = {"file": file, "set_bytes": set_bytes, "append": append}
    if truncate is not None:
        fat["truncate"] = truncate
    case = {"kind": "session", "model_dir": model_dir, "fat": fat}
    judge_session(worker.run(case), case, [file])


# ----------------------------------------------------------------- Session / generate args

hostile_int = st.one_of(
    st.integers(-(2**66), 2**66),
    st.integers(-2, 70),
    st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64]),
)
hostile_any = st.one_of(hostile_int, st.floats(), st.text(max_size=8), st.none(), st.booleans())
# Options that size memory take values that are refused or modest (not gigabytes of KV cache
# that would be allocated and filled on a shared machine).
memory_int = st.one_of(st.integers(-3, 512), st.sampled_from([2**31, 2**63, 2**64, -(2**63)]))
OPTIONS = {
    "num_threads": st.one_of(st.none(), st.integers(-2, 4), hostile_int),
    "max_batch": st.one_of(
        memory_int.filter(lambda v: v <= 64),
        hostile_any.filter(lambda v: not isinstance(v, int) or v <= 0 or v > 2**31 - 1),
    ),
    "max_seq_len": st.one_of(st.none(), memory_int),
    "kv_block_size": st.one_of(memory_int, hostile_any),
    "kv_dtype": st.one_of(
        st.sampled_from(["auto", "float32", "float16", "bfloat16", "int8"]), hostile_any
    ),
    "max_cache_tokens": st.one_of(st.none(), memory_int),
    "prefill_chunk_tokens": st.one_of(memory_int, st.sampled_from([1, 2, 3])),
    "host_kv_tokens": st.one_of(st.integers(-2, 256), st.sampled_from([2**63, 2**64])),
    "spill_attention": st.one_of(st.sampled_from(["auto", "cpu", "stream", "gpu"]), hostile_any),
    "tp_tiles": st.one_of(st.none(), st.integers(-1, 4), hostile_int),
    "device": st.one_of(
        st.sampled_from(
            ["cpu", "cuda", "cuda:0", "cuda:99999999999", "cpu:0", "", "CPU", "cuda:-1"]
        ),
        st.text(max_size=10),
    ),
    "load": st.one_of(st.sampled_from(["mmap", "copy", "MMAP"]), hostile_any),
}
token = st.one_of(st.integers(0, 63), st.integers(-2, 70), hostile_int)
prompt = st.one_of(st.lists(token, min_size=0, max_size=6), st.lists(token, min_size=1, max_size=3))
GENERATE = {
    "max_new_tokens": st.one_of(st.integers(0, 6), hostile_int),
    "temperature": st.one_of(st.floats(), st.sampled_from([0.0, 0.7, 1.0])),
    "top_k": st.one_of(st.integers(0, 80), hostile_int),
    "top_p": st.one_of(st.floats(), st.sampled_from([1.0, 0.9, 0.5])),
    "seed": st.one_of(st.integers(0, 10), hostile_int),
    "stop_tokens": st.lists(token, max_size=3),
}


@fuzz_settings(EXAMPLES)
@given(
    options=st.fixed_dictionaries({}, optional=OPTIONS),
    prompts=st.lists(prompt, min_size=0, max_size=3),
    gen=st.fixed_dictionaries(
        {"max_new_tokens": GENERATE["max_new_tokens"]},
        optional={k: v for k, v in GENERATE.items() if k != "max_new_tokens"},
    ),
)
def test_fuzz_session_arguments(worker, model_dir, options, prompts, gen):
    def jsonable(v):
        return v if not isinstance(v, float) or math.isfinite(v) else str(v)

    # JSON cannot carry inf / nan: those floats travel as strings and are rebuilt by the worker
    # only for the float arguments of generate (strings elsewhere are hostile values anyway).
    generate = {"prompts": prompts, **{k: jsonable(v) for k, v in gen.items()}}
    for k in ("temperature", "top_p"):
        if isinstance(generate.get(k), str):
            generate[k] = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[generate[k]]
    case = {
        "kind": "session",
        "model_dir": model_dir,
        "options": {k: jsonable(v) for k, v in options.items()},
        "generate": generate,
    }
    text = json.dumps(case)  # NaN / Infinity are valid for Python's json
    answer = worker.run(json.loads(text))
    names = (
        list(options)
        + list(gen)
        + ["prompt", "prompts", "device", "token", "KV cache", "max_seq_len", "CUDA"]
    )
    judge_session(answer, case, names)


# ----------------------------------------------------------------------------- ops.attention

ops_kwargs = st.fixed_dictionaries(
    {},
    optional={
        "causal": st.booleans(),
        "window": st.tuples(
            st.one_of(st.integers(-3, 80), hostile_int), st.one_of(st.integers(-3, 80), hostile_int)
        ),
        "softmax_scale": st.one_of(
            st.none(), st.floats(1e-37, 1e30), st.sampled_from([0.0, -1.0, 1e-50, 1e39, 1e300])
        ),
        "num_threads": st.one_of(st.integers(0, 3), hostile_int),
        "num_splits": st.one_of(st.integers(0, 9), hostile_int),
    },
)


@fuzz_settings(EXAMPLES)
@given(
    shape=st.tuples(
        st.integers(1, 2),
        st.integers(0, 70),
        st.integers(0, 70),
        st.integers(1, 3),
        st.sampled_from([1, 2]),
        st.integers(1, 300),
    ),
    dtype=st.sampled_from(["float32", "float16"]),
    kwargs=ops_kwargs,
    seed=st.integers(0, 2**32 - 1),
)
def test_fuzz_ops_attention(worker, shape, dtype, kwargs, seed):
    b, sq, sk, group, hk, d = shape
    case = {
        "kind": "ops",
        "shape": [b, sq, sk, group * hk, hk, d],
        "dtype": dtype,
        "kwargs": kwargs,
        "seed": seed,
    }
    answer = worker.run(case)
    if answer["outcome"] == "ok":
        assert answer["finite"], f"non-finite output from finite input: {_describe(case)}"
        scale = kwargs.get("softmax_scale")
        if scale is None or scale < 1e3:  # past that the softmax is an argmax of near-ties
            assert answer["max_err"] <= answer["tolerance"], (
                f"wrong result {answer}: {_describe(case)}"
            )
        return
    where = f"{answer['type']}: {answer['message']}\n{_describe(case)}"
    assert answer["type"] in {"ValueError", "TypeError"}, (
        f"unexpected {where}\n{answer.get('traceback')}"
    )
    names = list(kwargs) + ["q", "k", "v", "head dim", "heads", "window"]
    assert any(n in answer["message"] for n in names), f"names nothing: {where}"


# ---------------------------------------------------------------------------------- the CLI

cli_value = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=8),
    st.sampled_from(["-1", "0", "1", "abc", "", "1e5", "cuda:99999999999"]),
)
CLI_FLAGS = [
    "--max-new-tokens",
    "--temperature",
    "--top-k",
    "--top-p",
    "--seed",
    "--stop",
    "--threads",
    "--device",
    "--prompt",
]


@fuzz_settings(max(3, EXAMPLES // 20))
@given(
    flags=st.lists(st.tuples(st.sampled_from(CLI_FLAGS), cli_value), max_size=3),
    prompt_text=st.one_of(st.just("1 2 3"), cli_value),
)
def test_fuzz_cli_generate(worker, model_dir, flags, prompt_text):
    argv = ["generate", "--model", model_dir, "--prompt", prompt_text]
    for flag, value in flags:
        argv += [flag, value]
    if any("\x00" in a for a in argv):
        return  # the OS cannot pass NUL bytes in arguments
    case = {"kind": "cli", "argv": argv}
    answer = worker.run(case, timeout=CASE_TIMEOUT + 60)
    assert answer["code"] in (0, 1, 2), f"exit {answer['code']}: {answer['stderr']}\n{argv}"
    assert "Traceback" not in answer["stderr"], f"{answer['stderr']}\n{argv}"
    if answer["code"] != 0:
        assert "error" in answer["stderr"], f"no message: {answer['stderr']}\n{argv}"
