"""The child process of tests/python/test_fuzz.py: runs one fuzz case per line of stdin (JSON)
and answers one JSON line on stdout, so that a crash or a hang ends this process, not the suite.

Answers: {"outcome": "ok", "finite": bool, ...} or {"outcome": "error", "type": NAME,
"message": TEXT}. Any exception is reported (the suite judges whether it names the problem).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import numpy as np


def _session_case(case: dict) -> dict:
    from fastattention.session import Session

    model = case["model_dir"]
    if "config_b64" in case or "fat" in case:
        work = tempfile.mkdtemp(prefix="fuzz-")
        try:
            dst = os.path.join(work, "model")
            shutil.copytree(model, dst)
            if "config_b64" in case:
                with open(os.path.join(dst, "config.json"), "wb") as f:
                    f.write(base64.b64decode(case["config_b64"]))
            if "fat" in case:
                fat = case["fat"]
                path = os.path.join(dst, "rank0", fat["file"])
                data = bytearray(open(path, "rb").read())
                for pos, value in fat.get("set_bytes", []):
                    if pos < len(data):
                        data[pos] = value
                if "truncate" in fat:
                    del data[fat["truncate"] :]
                data += bytes(fat.get("append", 0))
                with open(path, "wb") as f:
                    f.write(data)
            return _run_session(lambda: Session(dst, **case.get("options", {})), case)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _run_session(lambda: Session(model, **case.get("options", {})), case)


def _run_session(make, case: dict) -> dict:
    s = make()
    gen = case.get("generate", {"prompts": [[1, 2, 3]], "max_new_tokens": 2})
    kwargs = dict(gen)
    prompts = kwargs.pop("prompts")
    max_new = kwargs.pop("max_new_tokens")
    out = s.generate(prompts, max_new, **kwargs)
    vocab = s.config["vocab_size"]
    in_range = all(0 <= t < vocab for row in out for t in row)
    logits = s.logits([1, 2, 3][: max(1, min(3, s.options.max_seq_len))])
    return {"outcome": "ok", "finite": bool(np.isfinite(logits).all()), "in_range": in_range}


def _ops_case(case: dict) -> dict:
    from fastattention import ops

    rng = np.random.default_rng(case["seed"])
    b, sq, sk, hq, hk, d = case["shape"]
    dtype = np.dtype(case["dtype"])
    q = rng.standard_normal((b, sq, hq, d)).astype(dtype)
    k = rng.standard_normal((b, sk, hk, d)).astype(dtype)
    v = rng.standard_normal((b, sk, hk, d)).astype(dtype)
    out = ops.attention(q, k, v, **case["kwargs"])
    out = np.asarray(out, dtype=np.float32)
    # A float64 reference of what was asked (bottom-right aligned masks, as the kernel).
    kw = case["kwargs"]
    scale = kw.get("softmax_scale") or 1.0 / np.sqrt(d)
    left, right = (min(w, 1 << 40) for w in kw.get("window", (-1, -1)))
    qi = np.arange(sq)[:, None] + sk - sq
    kj = np.arange(sk)[None, :]
    visible = np.ones((sq, sk), bool)
    if kw.get("causal"):
        visible &= kj <= qi
    if left >= 0:
        visible &= kj >= qi - left
    if right >= 0:
        visible &= kj <= qi + right
    group = hq // hk
    k64 = np.repeat(k.astype(np.float64), group, axis=2)
    v64 = np.repeat(v.astype(np.float64), group, axis=2)
    s = np.einsum("bqhd,bkhd->bhqk", q.astype(np.float64), k64) * scale
    s = np.where(visible, s, -np.inf)
    m = s.max(-1, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    denom = p.sum(-1, keepdims=True)
    p = np.where(denom > 0, p / np.where(denom > 0, denom, 1), 0.0)
    ref = np.einsum("bhqk,bkhd->bqhd", p, v64)
    tol = 1e-4 if dtype == np.float32 else 2e-2
    err = float(np.abs(out - ref).max()) if out.size else 0.0
    return {
        "outcome": "ok",
        "finite": bool(np.isfinite(out).all()),
        "max_err": err,
        "tolerance": tol,
    }


def _cli_case(case: dict) -> dict:
    res = subprocess.run(
        [sys.executable, "-m", "fastattention.cli", *case["argv"]],
        capture_output=True,
        text=True,
        timeout=case.get("timeout", 60),
    )
    return {"outcome": "exit", "code": res.returncode, "stderr": res.stderr[-3000:]}


def main() -> None:
    handlers = {"session": _session_case, "ops": _ops_case, "cli": _cli_case}
    for line in sys.stdin:
        case = json.loads(line)
        try:
            answer = handlers[case["kind"]](case)
        except BaseException as e:  # noqa: BLE001 - every exception is reported to the judge
            answer = {
                "outcome": "error",
                "type": type(e).__name__,
                "message": str(e)[:2000],
                "traceback": traceback.format_exc()[-3000:],
            }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
