"""Token generation with a static KV cache: greedy or temperature / top-k / top-p sampling, stop tokens, streaming.

A batch of prompts is left-padded so every row writes the same cache slot at each step (see KVCache); rows that
hit a stop token keep running until all are done and have their tail cut off. Everything that does not change
between steps (cache, masks, rotary positions, the stop-token set, the sampling generator) is built before the
loop; a step is one forward over one token per row plus the sampling arithmetic.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from .model import GenesisLM, KVCache

# compile=True decodes into caches kept with the model for later calls, one per batch size, length bucket, dtype and
# device: the compiled step then sees the same shapes and the same tensors every time, so it is compiled (and on a
# GPU captured as a CUDA graph) once per bucket, not once per call or per prompt length.
_COMPILED_CACHES: weakref.WeakKeyDictionary[GenesisLM, dict[tuple, KVCache]] = weakref.WeakKeyDictionary()
# Buckets are powers of two from this up to max_seq_len: every step attends over the whole cache, so a bucket near
# the length in use keeps the keys and values each token reads small next to the weights (deep_narrow_40 at 1024
# slots: 126 MB a token in bf16, against 617 MB of weights; 20 MB at the 160 slots a 128-token reply needs).
_MIN_COMPILED_CACHE_LEN = 64


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids. temperature 0 is greedy (argmax); top-k then top-p filter before sampling."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already carry top_p of the mass (the best one always stays).
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def _decode_step(lm: GenesisLM, input_ids: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
    """Run (B, T) new tokens through the model and the cache: the last position's logits (B, V) and their argmax
    (B,), the greedy choice, taken here so that a compiled step includes it."""
    logits = lm.decode_step(input_ids, cache)
    return logits, logits.argmax(-1)


def _compiled_cache(lm: GenesisLM, batch_size: int, length: int, left_padding: torch.Tensor) -> KVCache:
    """This model's kept cache for `batch_size` rows and `length` positions, rounded up to its bucket (see
    _COMPILED_CACHES), reset for a new call."""
    weight = lm.embed.weight
    max_len = min(lm.config.max_seq_len, max(_MIN_COMPILED_CACHE_LEN, 1 << (length - 1).bit_length()))
    caches = _COMPILED_CACHES.setdefault(lm, {})
    key = (batch_size, max_len, weight.dtype, weight.device)
    if key not in caches:
        cache = KVCache(lm.config, batch_size, max_len, device=weight.device, dtype=weight.dtype)
        for tensor in cache.tensors():
            torch._dynamo.mark_static_address(tensor)
        caches[key] = cache
    caches[key].reset(left_padding)
    return caches[key]


def _known_guards_only():
    """A context in which compiled code checks only the guards that tell its compiled versions apart.

    For the compiled steps of one call after its first: they see the model, cache and shapes the first one was
    checked against, so no other guard can fail. Evaluating them all costs ~1 ms a token at 40 layers, as much as
    a whole CUDA graph replay of deep_narrow_40. torch < 2.7 has no such stance: every guard runs there.
    """
    try:
        return torch.compiler.set_stance(skip_guard_eval_unsafe=True)
    except (AttributeError, TypeError):
        return contextlib.nullcontext()


def check_generation_options(temperature, top_k, top_p, max_new_tokens) -> None:
    if not 0 <= temperature < float("inf"):  # also rejects nan
        raise ValueError(f"generate: temperature must be >= 0 and finite (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"generate: top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")


@torch.inference_mode()
def generate(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64, *,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, stop_tokens: Iterable[int] = (), pad_id: int = 0,
             on_token: Callable[[int, int], None] | None = None, compile: bool = False) -> list[list[int]]:
    """Continue each prompt by up to `max_new_tokens` tokens; returns the new tokens of each row.

    model: a GenesisLM or MultiTaskModel in any dtype (bf16 weights halve the bytes each token reads).
    A row ends at its first stop token, which is not included in its output. `on_token(row, token)` is called
    for every new token as it is produced (stop tokens excluded), for streaming. `seed` makes sampling
    reproducible; greedy decoding ignores it. `compile=True` compiles the one-token decode step (on a GPU as a
    CUDA graph, mode "reduce-overhead"; on a CPU with Inductor's C++ wrapper) once per model, batch size and
    length bucket (a power of two), over a cache kept for later calls: compiling takes seconds to minutes, after
    which each token costs a fraction of the eager step (per-op overhead, not the weights, bounds eager batch-1
    decoding).
    """
    lm: GenesisLM = getattr(model, "lm", model)
    check_generation_options(temperature, top_k, top_p, max_new_tokens)
    prompts = [list(prompt) for prompt in prompts]
    if not prompts or any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    lengths = [len(prompt) for prompt in prompts]
    width, total = max(lengths), max(lengths) + max_new_tokens
    if total > lm.config.max_seq_len:
        raise ValueError(f"generate: prompt ({width}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"max_seq_len={lm.config.max_seq_len}")
    weight = lm.embed.weight
    device = weight.device
    input_ids = torch.tensor([[pad_id] * (width - n) + p for n, p in zip(lengths, prompts)], device=device)
    left_padding = torch.tensor([width - n for n in lengths])
    if compile:
        cache = _compiled_cache(lm, len(prompts), total, left_padding)
        # A GPU replays the step as one CUDA graph; a CPU runs it from Inductor's C++ wrapper, with no Python per
        # kernel (tiny on the 2-core CPU machine: 920 tokens/s against 840 with the Python wrapper, 520 eager).
        how = {"mode": "reduce-overhead"} if device.type == "cuda" else {"options": {"cpp_wrapper": True}}
        # dynamic=False: each bucket compiles for its own static shapes rather than once for symbolic ones.
        decode = torch.compile(_decode_step, fullgraph=True, dynamic=False, **how)
    else:
        cache = KVCache(lm.config, len(prompts), total, device=device, dtype=weight.dtype, left_padding=left_padding)
        decode = _decode_step
    stop = torch.tensor(sorted(set(stop_tokens)), dtype=torch.long, device=device)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)

    tokens = torch.full((len(prompts), max_new_tokens), pad_id, dtype=torch.long, device=device)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    live = [True] * len(prompts)
    can_stop = stop.numel() > 0  # without stop tokens no row finishes early: no bookkeeping, no host sync
    logits, best = _decode_step(lm, input_ids, cache)  # the prompt, eager: its shape is seen only once
    for step in range(max_new_tokens):
        # A copy of `best`: a compiled step's outputs live in its CUDA graph's memory, which the next replay
        # overwrites, and this token is the next step's input.
        next_token = best.clone() if temperature == 0 else sample_next(logits, temperature, top_k, top_p, generator)
        if can_stop:
            next_token = next_token.masked_fill(finished, pad_id)  # finished rows emit padding
            stopped = torch.isin(next_token, stop) & ~finished
            if on_token is not None:
                live = (~finished & ~stopped).tolist()
            finished |= stopped
        tokens[:, step] = next_token
        if on_token is not None:
            for row, token in enumerate(next_token.tolist()):
                if live[row]:
                    on_token(row, token)
        if step == max_new_tokens - 1 or (can_stop and bool(finished.all())):
            break
        with _known_guards_only() if compile and step > 0 else contextlib.nullcontext():
            logits, best = decode(lm, next_token[:, None], cache)

    outputs = []
    stop_set = set(stop.tolist())
    for row in tokens[:, : step + 1].tolist():
        cut = next((i for i, token in enumerate(row) if token in stop_set), len(row))
        outputs.append(row[:cut])
    return outputs
