import os
import subprocess
import sys
import textwrap

import pytest
import torch

from genesis_model import GenesisLM, KVCache, MultiTaskModel, generate, sample_next


def greedy_by_recomputing(model: GenesisLM, prompt: list[int], steps: int) -> list[int]:
    """The reference: run the whole sequence through the model again for every new token."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(model(torch.tensor([ids]))[0, -1].argmax().item())
    return ids[len(prompt):]


@pytest.mark.parametrize("overrides", [{}, dict(norm_position="prenorm"), dict(n_kv_heads=2),
                                       dict(tie_embeddings=False, n_kv_heads=1)],
                         ids=["deepnorm", "prenorm", "gqa", "mqa-untied"])
def test_greedy_with_cache_equals_recomputing_the_sequence(make_config, overrides):
    model = GenesisLM(make_config(**overrides)).eval()
    prompt = [5, 17, 3, 42, 8]
    assert generate(model, [prompt], 20) == [greedy_by_recomputing(model, prompt, 20)]


def test_batch_of_padded_prompts_equals_each_prompt_alone(make_config):
    model = MultiTaskModel(make_config()).eval()
    prompts = [[5, 17, 3, 42, 8, 9, 1], [7], [11, 12, 13]]
    batched = generate(model, prompts, 12, pad_id=0)
    assert batched == [generate(model, [prompt], 12)[0] for prompt in prompts]
    assert batched == [greedy_by_recomputing(model.lm, prompt, 12) for prompt in prompts]


def test_prefill_in_chunks_equals_one_prefill(make_config):
    model = GenesisLM(make_config(n_kv_heads=2)).eval()
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        whole = model.decode_hidden_states(ids, KVCache(model.config, 2, 16))
        cache = KVCache(model.config, 2, 16)
        chunks = torch.cat([model.decode_hidden_states(ids[:, :5], cache),
                            model.decode_hidden_states(ids[:, 5:], cache)], dim=1)
    torch.testing.assert_close(chunks, whole)
    torch.testing.assert_close(whole, model.hidden_states(ids))


def test_stop_tokens_end_a_row_and_streaming_sees_every_token(make_config):
    model = GenesisLM(make_config()).eval()
    prompts = [[5, 17, 3], [9, 2]]
    free = generate(model, prompts, 10)
    stop = free[0][4]  # the fifth token of the first row becomes a stop token
    streamed = {0: [], 1: []}
    stopped = generate(model, prompts, 10, stop_tokens=[stop], on_token=lambda row, t: streamed[row].append(t))
    for row in range(2):
        cut = free[row].index(stop) if stop in free[row] else len(free[row])
        assert stopped[row] == free[row][:cut]
        assert streamed[row] == stopped[row]


def test_sampling_is_reproducible_with_a_seed(make_config):
    model = GenesisLM(make_config()).eval()
    first = generate(model, [[1, 2, 3]] * 3, 15, temperature=1.0, top_k=20, top_p=0.9, seed=7)
    assert first == generate(model, [[1, 2, 3]] * 3, 15, temperature=1.0, top_k=20, top_p=0.9, seed=7)
    assert first != generate(model, [[1, 2, 3]] * 3, 15, temperature=1.0, top_k=20, top_p=0.9, seed=8)
    assert len({tuple(row) for row in first}) > 1  # rows draw different samples


def test_top_k_one_and_tiny_top_p_are_greedy(make_config):
    model = GenesisLM(make_config()).eval()
    greedy = generate(model, [[4, 8, 15]], 10)
    assert generate(model, [[4, 8, 15]], 10, temperature=1.5, top_k=1, seed=0) == greedy
    assert generate(model, [[4, 8, 15]], 10, temperature=1.5, top_p=1e-6, seed=0) == greedy


def test_sample_next_follows_the_filtered_distribution():
    logits = torch.log(torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.15]]))
    generator = torch.Generator().manual_seed(0)
    n = 20_000

    def frequencies(**options):
        draws = sample_next(logits.expand(n, -1), temperature=1.0, generator=generator, **options)
        return torch.bincount(draws, minlength=5).double() / n

    # top-k 3 keeps tokens 1, 3, 4; top-p 0.75 needs them too (0.4 + 0.3 < 0.75); top-p 0.65 keeps 1 and 3.
    expected_top_k = torch.tensor([0, 0.4, 0, 0.3, 0.15], dtype=torch.float64) / 0.85
    expected_top_p_small = torch.tensor([0, 0.4, 0, 0.3, 0], dtype=torch.float64) / 0.7
    torch.testing.assert_close(frequencies(top_k=3), expected_top_k, atol=0.015, rtol=0)
    torch.testing.assert_close(frequencies(top_p=0.75), expected_top_k, atol=0.015, rtol=0)
    torch.testing.assert_close(frequencies(top_p=0.65), expected_top_p_small, atol=0.015, rtol=0)
    assert sample_next(logits, temperature=0.0).item() == 1


def test_temperature_sharpens_and_flattens():
    logits = torch.log(torch.tensor([[0.6, 0.4]]))
    generator = torch.Generator().manual_seed(0)
    cold = sample_next(logits.expand(20_000, -1), temperature=0.5, generator=generator).double().mean()
    # p ∝ p^(1/T): 0.4^2 / (0.6^2 + 0.4^2)
    assert cold.item() == pytest.approx(0.16 / 0.52, abs=0.015)


def test_bf16_weights_decode_like_bf16_recomputation(make_config):
    model = GenesisLM(make_config()).eval().to(torch.bfloat16)
    prompt = [5, 17, 3, 42]
    tokens = generate(model, [prompt], 8)[0]
    full = torch.tensor([prompt + tokens])
    with torch.no_grad():
        cache = KVCache(model.config, 1, full.shape[1], dtype=torch.bfloat16)
        stepwise = torch.cat([model.decode_hidden_states(full[:, :4], cache)] +
                             [model.decode_hidden_states(full[:, i:i + 1], cache)
                              for i in range(4, full.shape[1])], dim=1)
    assert model.embed.weight.dtype == torch.bfloat16 and len(tokens) == 8
    torch.testing.assert_close(stepwise.float(), model.hidden_states(full).float(), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("options, message", [
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(top_k=0), "top_k must be >= 1"),
    (dict(top_p=1.5), "top_p must be in"),
    (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
    (dict(max_new_tokens=100), "exceeds the model's max_seq_len=48"),
])
def test_bad_options_are_named(make_config, options, message):
    model = GenesisLM(make_config())
    with pytest.raises(ValueError, match=message):
        generate(model, [[1, 2, 3]], **{"max_new_tokens": 5, **options})
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[1], []], 5)


@pytest.fixture
def compile_calls(monkeypatch):
    """torch.compile without Inductor's codegen (not under test here, and its options are Inductor's): the options
    of every call are recorded; dynamo starts and ends empty."""
    calls = []
    real_compile = torch.compile

    def compile_without_codegen(fn, **options):
        calls.append(options)
        return real_compile(fn, fullgraph=options["fullgraph"], dynamic=options["dynamic"], backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_without_codegen)
    torch._dynamo.reset()
    yield calls
    torch._dynamo.reset()


def test_compiled_decode_step_is_one_graph_compiled_once(make_config, compile_calls):
    """Every decode step has the same shapes and reads no changing Python state: no graph break, and no recompile,
    neither between steps nor for a later call with other prompt lengths and another number of new tokens."""
    model = GenesisLM(make_config(n_kv_heads=2)).eval()
    prompts = [[5, 17, 3, 42, 8], [7, 1]]
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert generate(model, prompts, 12, compile=True) == generate(model, prompts, 12)
        other_prompts = [[9, 4], [11, 12, 13]]
        assert generate(model, other_prompts, 7, compile=True) == generate(model, other_prompts, 7)
    assert compile_calls == [{"fullgraph": True, "dynamic": False, "options": {"cpp_wrapper": True}}] * 2


def test_compiled_decoding_keeps_one_cache_per_length_bucket(make_config, compile_calls):
    """Caches are powers of two from 64 up to max_seq_len, kept for later calls: lengths 20 and 30 share the
    64-slot cache, 100 takes a 128-slot one; the output equals eager decoding in every bucket."""
    from genesis_model.generate import _COMPILED_CACHES

    model = GenesisLM(make_config(max_seq_len=256)).eval()
    for prompt_len, new_tokens in ((5, 15), (90, 10), (10, 20)):
        prompt = [(7 * i) % 90 + 1 for i in range(prompt_len)]
        assert generate(model, [prompt], new_tokens, compile=True) == generate(model, [prompt], new_tokens)
    assert sorted(max_len for _, max_len, _, _ in _COMPILED_CACHES[model]) == [64, 128]


def test_compiled_decoding_with_inductor_equals_recomputing_the_sequence(make_config):
    """The real compiled path (Inductor, C++ wrapper on the CPU): greedy output equals the recomputing reference,
    for a batch of padded prompts with grouped-query attention and for a later call with another prompt length."""
    torch._dynamo.reset()
    model = GenesisLM(make_config(n_kv_heads=2)).eval()
    prompts = [[5, 17, 3, 42, 8], [7, 1]]
    assert generate(model, prompts, 10, compile=True) == [greedy_by_recomputing(model, p, 10) for p in prompts]
    assert generate(model, [[9, 4, 4]], 6, compile=True) == [greedy_by_recomputing(model, [9, 4, 4], 6)]
    torch._dynamo.reset()


def test_compiled_decoding_checks_every_guard_at_the_first_step_of_a_call(make_config, compile_calls):
    """Later steps of a call skip the guards that cannot fail within it; a model changed between calls (here each
    block switched from DeepNorm to the pre-norm path) is still caught by the first step, and decodes as eagerly."""
    model = GenesisLM(make_config()).eval()
    prompt = [[5, 17, 3, 42]]
    deepnorm_output = generate(model, prompt, 10, compile=True)
    assert deepnorm_output == generate(model, prompt, 10)
    for block in model.blocks:
        block.deepnorm = False
    prenorm_output = generate(model, prompt, 10)
    assert prenorm_output != deepnorm_output
    assert generate(model, prompt, 10, compile=True) == prenorm_output


def test_decoding_through_the_triton_decoding_kernels_equals_recomputing(make_config, monkeypatch):
    """One-row projections through genesis_kernels.matvec and one-query attention through decode_attention, as
    Triton kernels (here under the interpreter): a padded batch with grouped-query attention decodes as the torch
    path does and as recomputing the sequence does."""
    from genesis_kernels.kernels import decode_attention, matvec

    calls = {"matvec_triton": 0, "residual_norm_matvec_triton": 0, "decode_attention_triton": 0}
    for module, name in ((matvec, "matvec_triton"), (matvec, "residual_norm_matvec_triton"),
                         (decode_attention, "decode_attention_triton")):
        kernel = getattr(module, name)

        def counted(*args, kernel=kernel, name=name):
            calls[name] += 1
            return kernel(*args)

        monkeypatch.setattr(module, name, counted)
    model = GenesisLM(make_config(n_heads=4, n_kv_heads=2)).eval()
    prompts = [[5, 17, 3, 42, 8], [7, 1]]
    with_torch = generate(model, prompts, 8)
    monkeypatch.setenv("GENESIS_KERNELS_BACKEND", "auto")
    with_triton = generate(model, prompts, 8)
    assert with_triton == with_torch == [greedy_by_recomputing(model, p, 8) for p in prompts]
    # 7 one-token steps after the prompt, each 2 layers x (4 projections + 1 attention); the batch of 2 rows takes
    # the fallback for its projections (matvec serves one row): only the attention counts.
    assert calls == {"matvec_triton": 0, "residual_norm_matvec_triton": 0, "decode_attention_triton": 7 * 2}
    (alone,) = generate(model, [prompts[0]], 8)
    assert alone == with_torch[0]
    # One row: each step's layers project qkv, the attention output and (gated) the MLP's output through matvec and
    # the gate/up projection with the attention's residual norm; the LM head and the prompt's (its last position).
    assert calls == {"matvec_triton": 7 * (2 * 3 + 1) + 1, "residual_norm_matvec_triton": 7 * 2,
                     "decode_attention_triton": 7 * 2 * 2}


def test_compiled_decode_step_keeps_the_decoding_kernels_in_one_graph():
    """What a GPU's generate(compile=True) traces: with the decoding kernels picked (as auto does on CUDA), the
    whole step is one graph holding every layer's matvec, residual_norm_matvec and decode_attention ops. Traced only, in a process
    without the interpreter (torch.compile cannot trace it): the recording backend never runs the graph."""
    script = textwrap.dedent("""
        import torch
        from genesis_kernels import dispatch
        from genesis_model import GenesisLM, ModelConfig
        from genesis_model.generate import _decode_step
        from genesis_model.model import KVCache

        dispatch._device_reason = lambda device: None
        dispatch.COMPILABLE_DEVICE_TYPES = ("cuda", "cpu")
        graphs = []

        def record(graph_module, example_inputs):
            graphs.append(graph_module)
            outputs = next(node for node in graph_module.graph.nodes if node.op == "output").args[0]
            return lambda *args: (None,) * len(outputs)

        model = GenesisLM(ModelConfig(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=97,
                                      max_seq_len=48)).eval()
        cache = KVCache(model.config, 1, 16)
        with torch.inference_mode():
            torch.compile(_decode_step, fullgraph=True, dynamic=False, backend=record)(
                model, torch.tensor([[3]]), cache)
        ops = [str(node.target) for node in graphs[0].graph.nodes if node.op == "call_function"]
        print(len(graphs), ops.count("genesis_kernels.matvec.default"),
              ops.count("genesis_kernels.residual_norm_matvec.default"),
              ops.count("genesis_kernels.decode_attention.default"))
    """)
    env = {key: value for key, value in os.environ.items() if key not in ("TRITON_INTERPRET", "GENESIS_KERNELS_BACKEND")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["1", str(3 * 3 + 1), "3", "3"]
