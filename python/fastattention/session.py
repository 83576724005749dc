"""Session: load an exported model (see docs/FORMAT.md) and generate tokens or compute logits.

    from fastattention.session import Session
    s = Session("exported/llama", max_batch=4)
    new_tokens = s.generate([[1, 15043], [1, 306, 626]], max_new_tokens=32)
    s.timings   # {"prefill_tokens": ..., "decode_ms_per_step": ..., ...} of the last call

Semantics worth knowing:
  * generate() returns the new tokens only. A sequence stops after emitting one of `stop_tokens`
    (the stop token is included in its output) or after max_new_tokens. The config's
    eos_token_id is not a stop token unless passed (session.config["eos_token_id"]).
  * Sampling: temperature 0 is greedy. Request i of a batch draws with seed `seed + i` and its own
    step counter, so its tokens do not depend on the rest of the batch; to reproduce request i
    alone, pass seed + i.
  * timings describe the last generate() or logits() call (each call resets them).
  * Text (a model exported with its tokenizer, docs/FORMAT.md): generate("text", n) returns a
    Completion (a str with .token_ids, .finish_reason, .stop), generate(["a", "b"], n) a list
    of them; ids in still give ids out. The text is tokenizer.decode(new ids) with special
    tokens skipped and the stop token left out. stop=["\n\n"] ends a request at a stop
    string (its text is cut before it).
  * chat(messages, ...) applies the tokenizer's chat template (transformers' rendering) and
    stops at the end-of-turn tokens (eos, <|im_end|>, <|eot_id|>, ... that the vocabulary has,
    and the config's eos_token_id) unless stop_tokens is given; messages is one chat (a list of
    {"role", "content"} dicts) or a list of chats (a batch).
  * stream(prompts, n, ...) and chat(..., stream=True) return an iterator over the text as it
    is decoded: pieces (str) for one text prompt or chat, (request index, piece) for a batch,
    each request's pieces in order and independent of the others; joined, they equal the
    non-streamed text. A piece never ends inside a UTF-8 character, and text that may be the
    start of a stop string is held back until it is not. Closing the iterator early (break,
    close(), Ctrl-C while reading it) stops the generation at the next step; the session stays
    usable. Calls on a session are serialised: one made while a stream's generation runs (in
    a worker thread) waits for it to end.
  * Errors: bad arguments raise TypeError / ValueError naming the prompt, position or option;
    broken weight files raise fastattention.WeightFileError (a ValueError) naming the file; a KV
    cache too small for the batch raises MemoryError. README "Errors and limits" has the list.
  * Ctrl-C in generate() raises KeyboardInterrupt at the next step; the session stays usable, and
    the tokens made before it reached on_step (if given).
  * Weight files are memory-mapped unless load="copy": they must not change under a live session.
"""

from __future__ import annotations

import json
import numbers
import os
import re

import numpy as np

from fastattention import distributed
from fastattention._native import _C
from fastattention.text_api import (  # noqa: F401 (Completion: re-exported)
    Completion,
    TextGeneration,
    TextRequest,
)
from fastattention.tokenizer import Tokenizer, load_tokenizer

_KV_DTYPES = ("auto", "float32", "float16", "bfloat16")


_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def _check_int(name: str, value, minimum: int | None = None, maximum: int = _INT64_MAX) -> int:
    """An int argument; `maximum` is the range of the C++ field it goes to (int64 unless given)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def _model_path(model_dir) -> bytes:
    """A model directory (str, bytes or os.PathLike) as the bytes the OS uses: a str path that is
    not valid UTF-8 (surrogate-escaped, as os.listdir returns it) reaches the file system as is."""
    if not isinstance(model_dir, (str, bytes, os.PathLike)):
        raise TypeError(
            f"model_dir must be a path (str, bytes or os.PathLike), got {type(model_dir).__name__}"
        )
    path = os.fsencode(model_dir)
    if b"\0" in path:
        raise ValueError(f"model_dir: {model_dir!r} contains a NUL byte")
    return path


def _check_device(device) -> str:
    if not isinstance(device, str):
        raise TypeError(f"device must be a string, got {type(device).__name__}")
    match = re.fullmatch(r"cpu|cuda(?::([0-9]+))?", device)
    if match is None:
        raise ValueError(f"device: {device!r} is not a valid device (expected cpu, cuda or cuda:N)")
    if match.group(1) is not None and int(match.group(1)) > _INT32_MAX:
        raise ValueError(f"device: {device!r}: the GPU index is out of range")
    return device


def _check_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def _check_seed(seed) -> int:
    seed = _check_int("seed", seed, 0)
    if seed >= 1 << 64:
        raise ValueError(f"seed must be below 2**64, got {seed}")
    return seed


def _token_list(prompt, where: str) -> list[int]:
    """A prompt as a list of Python ints; TypeError naming `where` for anything else."""
    if isinstance(prompt, np.ndarray):
        if prompt.ndim != 1 or prompt.dtype.kind not in "iu":
            raise TypeError(
                f"{where} must be a 1-D integer array or a list of ints, got a "
                f"{prompt.ndim}-D {prompt.dtype} array"
            )
        return [int(t) for t in prompt]
    if isinstance(prompt, (str, bytes)) or not isinstance(prompt, (list, tuple)):
        raise TypeError(
            f"{where} must be a list of token ids (ints), got {type(prompt).__name__}"
            + (" (tokenize the text first)" if isinstance(prompt, (str, bytes)) else "")
        )
    out = []
    for pos, tok in enumerate(prompt):
        if isinstance(tok, bool) or not isinstance(tok, numbers.Integral):
            raise TypeError(
                f"{where}, position {pos}: token ids must be ints, got {type(tok).__name__} {tok!r}"
            )
        tok = int(tok)
        if not -_INT64_MAX - 1 <= tok <= _INT64_MAX:
            raise ValueError(
                f"{where}, position {pos}: token id {tok} is out of range (token ids "
                f"are 0..vocab_size-1)"
            )
        out.append(tok)
    return out


def _session_options(
    device: str = "cpu",
    *,
    num_threads=None,
    max_batch: int = 8,
    max_seq_len=None,
    kv_block_size: int = 16,
    kv_dtype: str = "auto",
    max_cache_tokens=None,
    prefill_chunk_tokens: int = 2048,
    gpu_memory_fraction: float = 0.9,
    gpu_kv_budget=None,
    host_kv_tokens: int = 0,
    spill_attention: str = "auto",
    verbose: bool = False,
    tp_overlap: bool = True,
    tp_tiles=None,
    cuda_graphs: bool = True,
) -> "_C.SessionOptions":
    """The checked _C.SessionOptions of Session's keyword arguments (documented there)."""
    _check_device(device)
    if not isinstance(kv_dtype, str) or kv_dtype not in _KV_DTYPES:
        raise ValueError(f"kv_dtype must be one of {', '.join(_KV_DTYPES)}, got {kv_dtype!r}")
    opts = _C.SessionOptions()
    opts.device = device
    opts.num_threads = (
        0 if num_threads is None else _check_int("num_threads", num_threads, 1, _INT32_MAX)
    )
    opts.max_batch = _check_int("max_batch", max_batch, 1, _INT32_MAX)
    opts.max_seq_len = (
        0 if max_seq_len is None else _check_int("max_seq_len", max_seq_len, 1, _INT32_MAX)
    )
    opts.kv_block_size = _check_int("kv_block_size", kv_block_size, 1, _INT32_MAX)
    opts.kv_dtype = kv_dtype
    opts.max_cache_tokens = (
        0 if max_cache_tokens is None else _check_int("max_cache_tokens", max_cache_tokens, 1)
    )
    opts.prefill_chunk_tokens = _check_int("prefill_chunk_tokens", prefill_chunk_tokens, 1)
    gpu_memory_fraction = _check_float("gpu_memory_fraction", gpu_memory_fraction)
    if not 0.0 < gpu_memory_fraction <= 1.0:
        raise ValueError(f"gpu_memory_fraction must be in (0, 1], got {gpu_memory_fraction}")
    opts.gpu_memory_fraction = gpu_memory_fraction
    if gpu_kv_budget is not None:
        gpu_kv_budget = _check_float("gpu_kv_budget", gpu_kv_budget)
        if gpu_kv_budget <= 0:
            raise ValueError(
                f"gpu_kv_budget must be > 0 (a fraction <= 1 or bytes), got {gpu_kv_budget}"
            )
        opts.gpu_kv_budget = gpu_kv_budget
    opts.host_kv_tokens = _check_int("host_kv_tokens", host_kv_tokens, 0)
    if spill_attention not in ("auto", "cpu", "stream"):
        raise ValueError(f"spill_attention must be auto, cpu or stream, got {spill_attention!r}")
    opts.spill_attention = spill_attention
    opts.verbose = bool(verbose)
    opts.tp_overlap = bool(tp_overlap)
    opts.tp_tiles = 0 if tp_tiles is None else _check_int("tp_tiles", tp_tiles, 1, _INT32_MAX)
    if not isinstance(cuda_graphs, bool):
        raise TypeError(f"cuda_graphs must be True or False, got {cuda_graphs!r}")
    opts.cuda_graphs = cuda_graphs
    return opts


def _new_session(make, opts):
    """make(), with a MemoryError from an allocation at load (e.g. a KV cache of absurd size)
    extended by the options that size memory, so the message names what to change."""
    try:
        return make()
    except MemoryError as e:
        if "max_cache_tokens" in str(e) or "Memory plan" in str(e):
            raise
        raise MemoryError(
            f"{e} (while loading the session with max_batch={opts.max_batch}, "
            f"max_seq_len={opts.max_seq_len or 'the model maximum'}, "
            f"max_cache_tokens={opts.max_cache_tokens or 'default'}, "
            f"host_kv_tokens={opts.host_kv_tokens}, "
            f"prefill_chunk_tokens={opts.prefill_chunk_tokens})"
        ) from None


class Session(TextGeneration):
    """An exported model loaded for inference, with its paged KV cache.

    model_dir: an exported model directory (config.json, rank0/...). Session.from_memory(config,
        tensors) takes weights already in memory instead (e.g. fastattention.random_weights).
    device: "cpu", "cuda" or "cuda:N" (a CUDA build; see fastattention.cuda_available()). On a
        GPU the weights are copied to the device, activations and the KV cache use the weights'
        dtype, and the KV cache gets what gpu_memory_fraction leaves after the weights and
        activations (the plan is printed with verbose=True and in session.memory_plan).
    num_threads: CPU threads for the kernels (None: OpenMP's default).
    max_batch: most prompts per generate() call.
    max_seq_len: prompt + new tokens per sequence (None: the model's max_position_embeddings).
    kv_block_size: tokens per KV-cache block.
    kv_dtype: "auto" (float32 on the CPU, the weights' dtype on a GPU), "float32", "float16" or
        "bfloat16" KV cache (a GPU session accepts only the weights' dtype).
    max_cache_tokens: KV pool size in tokens over all sequences (None: on the CPU max_batch *
        min(max_seq_len, 4096); on a GPU as many as the memory budget allows, at most
        max_batch * max_seq_len). A GPU pool that does not fit raises MemoryError at load.
    gpu_memory_fraction: share of the GPU's memory the session may use in all (GPU only).
    gpu_kv_budget: the device KV pool's budget (GPU only): a fraction of the GPU's memory (<= 1)
        or bytes (> 1); None: what the memory plan leaves. max_cache_tokens wins if given.
    host_kv_tokens: size in tokens of a host-memory KV pool (pinned on a GPU) that takes the
        older tokens of sequences outgrowing the device pool, so contexts longer than the device
        can hold still run (attention over them runs on the CPU, merged by log-sum-exp).
        0: no spilling. Not for sliding-window models.
    spill_attention: how attention reads spilled KV: "auto" (on a GPU: prefill streams the host
        blocks to the GPU; decode measures streaming against computing on the CPU, where the
        blocks are, and keeps the faster; timings say how many steps took each), "cpu" or
        "stream".
    prefill_chunk_tokens: token budget of one prefill forward pass (bounds activation memory;
        longer prompts and batches are prefilled in chunks).
    verbose: log the weight and KV-cache memory at load.
    load: how the weight files are held. "mmap" (default) maps them read-only: no copy, and the
        pages are shared with the OS cache, but the files must not change while the session
        lives (a file truncated or rewritten in place makes the next generate read the new bytes,
        or die with SIGBUS where the file got shorter; replace files by renaming a new one over
        them instead). "copy" reads them into memory the session owns, after which the files
        may change or disappear.
    tp_overlap, tp_tiles: tensor parallelism (a model exported with --tp N, run as
        `mpirun -n N python script.py`, one process per rank): the row-parallel GEMMs (attention
        output, FFN down) overlap each row tile's all-reduce with the next tile's GEMM
        (tiling-AllReduce); tp_tiles is the tile count (None: chosen for the backend: on CPU
        ranks from the token count; on GPUs 1, since tiles made whole prefills slower on
        2 x H200, see the README), tp_overlap=False computes the whole GEMM, then all-reduces.
        Every rank must make the same calls; each gets the same tokens. See
        fastattention.distributed.
    cuda_graphs: GPU sessions run each decode step as a captured CUDA graph (one launch instead
        of ~10 per layer; graphs per batch-size bucket, captured lazily). Steps a graph cannot
        take run eagerly: spilled KV, tensor parallelism, dynamic-NTK RoPE (see
        uses_cuda_graphs / cuda_graphs_off_reason). False runs every step eagerly. Ignored on
        the CPU; must be a bool.
    """

    def __init__(
        self,
        model_dir,
        device: str = "cpu",
        *,
        num_threads=None,
        max_batch: int = 8,
        max_seq_len=None,
        kv_block_size: int = 16,
        kv_dtype: str = "auto",
        max_cache_tokens=None,
        prefill_chunk_tokens: int = 2048,
        gpu_memory_fraction: float = 0.9,
        gpu_kv_budget=None,
        host_kv_tokens: int = 0,
        spill_attention: str = "auto",
        verbose: bool = False,
        tp_overlap: bool = True,
        tp_tiles=None,
        cuda_graphs: bool = True,
        load: str = "mmap",
    ):
        path = _model_path(model_dir)
        if load not in ("mmap", "copy"):
            raise ValueError(f"load must be 'mmap' or 'copy', got {load!r}")
        opts = _session_options(
            device,
            num_threads=num_threads,
            max_batch=max_batch,
            max_seq_len=max_seq_len,
            kv_block_size=kv_block_size,
            kv_dtype=kv_dtype,
            max_cache_tokens=max_cache_tokens,
            prefill_chunk_tokens=prefill_chunk_tokens,
            gpu_memory_fraction=gpu_memory_fraction,
            gpu_kv_budget=gpu_kv_budget,
            host_kv_tokens=host_kv_tokens,
            spill_attention=spill_attention,
            verbose=verbose,
            tp_overlap=tp_overlap,
            tp_tiles=tp_tiles,
            cuda_graphs=cuda_graphs,
        )
        self.model_dir = os.fspath(model_dir)
        # Under mpirun, a rank that fails (here or later) ends the job instead of leaving the
        # other ranks waiting for it.
        distributed.abort_on_error()
        opts.load = load
        self._session = _new_session(lambda: _C.InferenceSession(path, opts), opts)
        self._init_text(load_tokenizer(os.fsdecode(path)))

    @classmethod
    def from_memory(
        cls, config: dict, tensors, device: str = "cpu", *, tokenizer=None, **options
    ) -> "Session":
        """A session over weights already in memory, with no model directory.

        config: the model's config.json as a dict (docs/FORMAT.md; "format" and
            "format_version" may be left out). Under mpirun, its tp_size is the number of ranks.
        tensors: THIS process's rank's tensors {name: array} (names and shapes of docs/FORMAT.md
            "Tensors of rank r"; under mpirun the rank is fastattention.distributed.rank()):
            C-contiguous numpy arrays (or CPU torch tensors) of the config's dtype. On the CPU
            they are used in place, not copied: the session keeps them alive, and they must not
            be changed while it lives. On a GPU they are copied at load and let go of after.
        device, options: as for Session(model_dir, ...).
        tokenizer: None (token ids only), a fastattention.tokenizer.Tokenizer, or a directory
            holding a tokenizer.json (docs/FORMAT.md).

        fastattention.random_weights builds such tensors from a seed (any rank's shard).
        Errors: a missing tensor or one of the wrong dtype or shape raises WeightFileError naming
        it; a bad config raises WeightFileError naming the key.
        """
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict (a config.json), got {type(config).__name__}")
        if not hasattr(tensors, "items"):
            raise TypeError(f"tensors must be a dict {{name: array}}, got {type(tensors).__name__}")
        try:
            text = json.dumps({"format": "fastattention", "format_version": 1, **config})
        except TypeError as e:
            raise TypeError(f"config: not JSON-serialisable: {e}") from None
        opts = _session_options(device, **options)
        self = cls.__new__(cls)
        self.model_dir = None
        distributed.abort_on_error()
        self._session = _new_session(
            lambda: _C.InferenceSession.from_memory(text, dict(tensors), opts), opts
        )
        if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
            tokenizer = Tokenizer.from_dir(tokenizer)
        self._init_text(tokenizer)
        return self

    def generate(
        self,
        prompts,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop_tokens=(),
        stop=None,
        on_step=None,
        skip_special_tokens: bool = True,
    ):
        """New tokens for each prompt, the batch run together.

        prompts: a list of prompts as token ids (lists of ints) -> a list of lists of new token
        ids; or text (needs the model's tokenizer): a str -> one Completion, a list of str ->
        a list of Completion (a str subclass carrying .token_ids, .finish_reason, .stop).
        stop_tokens: token ids that end a request (included in its ids, left out of its text).
        stop: strings that end a request; its text is cut just before the first one and its
        ids end where it was found (ids input gives cut ids).
        on_step: None, or a callable called after each step with the new tokens as a list of
        (request index, token id); returning False stops the call early (every request keeps
        its tokens so far). Ctrl-C raises KeyboardInterrupt at the next step; the session stays
        usable."""
        batch, single = self._encode_prompts(prompts)
        sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        if batch is None and stop is None:
            batch, args = self._check_generate(
                prompts, max_new_tokens, stop_tokens=stop_tokens, on_step=on_step, **sampling
            )
            return self._session.generate(batch, **args)
        request = TextRequest(
            prompts if batch is None else batch,
            single,
            max_new_tokens,
            sampling,
            stop_tokens,
            stop,
            skip_special_tokens,
        )
        return self._generate_text(request, on_step, as_ids=batch is None)

    def _check_generate(
        self, prompts, max_new_tokens, *, temperature, top_k, top_p, seed, stop_tokens, on_step
    ):
        """(checked batch of token-id lists, keyword arguments of _C generate)."""
        if on_step is not None and not callable(on_step):
            raise TypeError(f"on_step must be callable or None, got {type(on_step).__name__}")
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (list, tuple)):
            raise TypeError(
                f"prompts must be a list of prompts (lists of token ids), got "
                f"{type(prompts).__name__}"
            )
        if len(prompts) == 0:
            raise ValueError("prompts: empty list; pass at least one prompt")
        if all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in prompts):
            raise TypeError(
                "prompts must be a list of prompts (lists of token ids), got a flat "
                "list of ints; wrap a single prompt as [prompt]"
            )
        batch = [_token_list(p, f"prompt {i}") for i, p in enumerate(prompts)]
        stops = _token_list(
            list(stop_tokens) if isinstance(stop_tokens, (set, frozenset)) else stop_tokens,
            "stop_tokens",
        )
        max_new_tokens = _check_int("max_new_tokens", max_new_tokens, 0)
        max_seq_len = self._session.options.max_seq_len
        if max_new_tokens > max_seq_len:  # also keeps prompt + max_new_tokens within int64
            raise ValueError(
                f"max_new_tokens: {max_new_tokens} exceeds max_seq_len "
                f"({max_seq_len}), the most tokens a sequence may hold (prompt + "
                f"new tokens)"
            )
        return batch, dict(
            max_new_tokens=max_new_tokens,
            temperature=_check_float("temperature", temperature),
            top_k=_check_int("top_k", top_k, 0, _INT32_MAX),
            top_p=_check_float("top_p", top_p),
            seed=_check_seed(seed),
            stop_tokens=stops,
            on_step=on_step,
        )

    def logits(self, prompt) -> np.ndarray:
        """float32 logits [len(prompt), vocab_size] at every position of one prompt."""
        return self._session.logits(_token_list(prompt, "prompt"))

    @property
    def timings(self) -> dict:
        """prefill_tokens, prefill_seconds, prefill_tokens_per_s, decode_steps, decode_seconds,
        decode_ms_per_step of the last generate() / logits() call."""
        return self._session.timings

    @property
    def config(self) -> dict:
        """The model's config.json as parsed and validated by the runtime."""
        return self._session.config

    @property
    def options(self):
        """The session options with defaults resolved (max_seq_len, max_cache_tokens, ...)."""
        return self._session.options

    @property
    def rank(self) -> int:
        """This process's tensor-parallel rank (0 without mpirun)."""
        return self._session.rank

    @property
    def world_size(self) -> int:
        """Ranks running the model together (1 without mpirun)."""
        return self._session.world_size

    @property
    def weight_bytes(self) -> int:
        """Bytes of this rank's weights (mapped files, or the in-memory tensors)."""
        return self._session.weight_bytes

    @property
    def kv_cache_bytes(self) -> int:
        return self._session.kv_cache_bytes

    @property
    def memory_plan(self) -> str:
        """Weights, activations, device and host KV pools, the longest context that fits."""
        return self._session.memory_plan

    @property
    def spilled_blocks(self) -> int:
        """KV blocks moved from the device pool to the host pool since the session started."""
        return self._session.spilled_blocks

    @property
    def uses_cuda_graphs(self) -> bool:
        """Whether decode steps run as captured CUDA graphs (GPU sessions with cuda_graphs=True
        whose model allows it; see cuda_graphs_off_reason)."""
        return self._session.uses_cuda_graphs

    @property
    def cuda_graphs_off_reason(self) -> str:
        """Why a GPU session with cuda_graphs=True runs its decode steps eagerly ('' otherwise)."""
        return self._session.cuda_graphs_off_reason

    def step_logits(self) -> np.ndarray:
        """float32 [B, vocab_size] logits of the last step of generate() (B: the requests that
        step sampled for). Call it from an on_step hook to see each step's logits."""
        return self._session.step_logits()

    def __repr__(self) -> str:
        c = self.config
        where = "in-memory weights" if self.model_dir is None else repr(self.model_dir)
        return (
            f"Session({where}, {c['architecture']}, {c['num_layers']} layers, "
            f"hidden {c['hidden_size']}, vocab {c['vocab_size']})"
        )
