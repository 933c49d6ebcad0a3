import math

import pytest
import torch
import torch.nn.functional as F

from genesis_model import GenesisLM


def reference_logits(model: GenesisLM, input_ids: torch.Tensor) -> torch.Tensor:
    """The architecture written out in float64 from the state dict: separate q/k/v, explicit softmax attention."""
    cfg = model.config
    w = {name: tensor.double() for name, tensor in model.state_dict().items()}
    B, T = input_ids.shape
    d, H, K, D, m = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_mlp
    angles = torch.arange(T, dtype=torch.float64)[:, None] * cfg.rope_theta ** (
        -torch.arange(0, D, 2, dtype=torch.float64) / D)
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]

    def rotate(t):  # rotates the pairs (i, i + D/2) by position * frequency_i
        a, b = t[..., : D // 2], t[..., D // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    def rms_norm(x, weight):
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps) * weight

    def attention(h, p):
        qkv = h @ w[p + "attn.qkv.weight"].T
        q = rotate(qkv[..., :d].reshape(B, T, H, D))
        k = rotate(qkv[..., d:d + K * D].reshape(B, T, K, D)).repeat_interleave(H // K, dim=2)
        v = qkv[..., d + K * D:].reshape(B, T, K, D).repeat_interleave(H // K, dim=2)
        scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        out = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).reshape(B, T, d)
        return out @ w[p + "attn.out.weight"].T

    def mlp(h, p):
        gate_up = h @ w[p + "mlp.gate_up.weight"].T
        return (F.silu(gate_up[..., :m]) * gate_up[..., m:]) @ w[p + "mlp.down.weight"].T

    x = w["embed.weight"][input_ids]
    alpha = (2 * cfg.n_layers) ** 0.25
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        if cfg.norm_position == "deepnorm":
            x = rms_norm(alpha * x + attention(x, p), w[p + "attn_norm.weight"])
            x = rms_norm(alpha * x + mlp(x, p), w[p + "mlp_norm.weight"])
        else:
            x = x + attention(rms_norm(x, w[p + "attn_norm.weight"]), p)
            x = x + mlp(rms_norm(x, w[p + "mlp_norm.weight"]), p)
    if cfg.norm_position == "prenorm":
        x = rms_norm(x, w["final_norm.weight"])
    return x @ w.get("lm_head.weight", w["embed.weight"]).T


def randomize_norms(model: GenesisLM) -> None:
    """Norm weights start at one; random ones make the comparison see which weight goes where."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)


@pytest.mark.parametrize("overrides", [
    dict(norm_position="deepnorm"),
    dict(norm_position="prenorm"),
    dict(norm_position="deepnorm", n_kv_heads=2, tie_embeddings=False),
    dict(norm_position="prenorm", n_kv_heads=1),
], ids=["deepnorm", "prenorm", "deepnorm-gqa-untied", "prenorm-mqa"])
def test_forward_matches_float64_reference(make_config, overrides):
    model = GenesisLM(make_config(**overrides))
    randomize_norms(model)
    ids = torch.randint(0, model.config.vocab_size, (3, 20))
    torch.testing.assert_close(model(ids).double(), reference_logits(model, ids), atol=2e-4, rtol=2e-4)


def test_triton_interpreter_backend_matches_torch_backend(make_config, monkeypatch):
    model = GenesisLM(make_config(n_heads=2, n_kv_heads=1))
    randomize_norms(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    results = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("GENESIS_KERNELS_BACKEND", backend)
        model.zero_grad()
        logits = model(ids)
        logits.square().mean().backward()
        results[backend] = logits.detach(), [p.grad.clone() for p in model.parameters()]
    torch.testing.assert_close(results["triton"][0], results["torch"][0], atol=1e-4, rtol=1e-4)
    for triton_grad, torch_grad in zip(results["triton"][1], results["torch"][1]):
        torch.testing.assert_close(triton_grad, torch_grad, atol=1e-4, rtol=1e-3)


def test_causal_future_tokens_do_not_change_past_logits(make_config):
    model = GenesisLM(make_config())
    ids = torch.randint(0, model.config.vocab_size, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % model.config.vocab_size
    torch.testing.assert_close(model(ids)[:, :8], model(changed)[:, :8])
    assert not torch.allclose(model(ids)[:, 8:], model(changed)[:, 8:])


def test_deepnet_initialization_scales(make_config):
    cfg = make_config(d_model=256, n_layers=6, n_heads=4, d_mlp=512)
    model = GenesisLM(cfg)
    beta = (8 * 6) ** -0.25
    assert cfg.deepnorm_alpha == pytest.approx(12 ** 0.25) and cfg.deepnorm_beta == pytest.approx(beta)
    block = model.blocks[0]
    q, k, v = block.attn.qkv.weight.split([256, 256, 256])
    gate, up = block.mlp.gate_up.weight.chunk(2)

    def xavier_std(fan_in, fan_out, gain):
        return gain * math.sqrt(2 / (fan_in + fan_out))

    expected = [(q, xavier_std(256, 256, 1)), (k, xavier_std(256, 256, 1)), (v, xavier_std(256, 256, beta)),
                (block.attn.out.weight, xavier_std(256, 256, beta)), (gate, xavier_std(256, 512, beta)),
                (up, xavier_std(256, 512, beta)), (block.mlp.down.weight, xavier_std(512, 256, beta))]
    for weight, std in expected:
        assert weight.std().item() == pytest.approx(std, rel=0.03)


def test_prenorm_initialization_scales_output_projections(make_config):
    cfg = make_config(d_model=256, n_layers=8, n_heads=4, norm_position="prenorm")
    block = GenesisLM(cfg).blocks[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert block.attn.out.weight.std().item() == pytest.approx(0.02 / 4, rel=0.03)
    assert block.mlp.down.weight.std().item() == pytest.approx(0.02 / 4, rel=0.03)


def test_tied_embeddings_share_the_embedding_matrix(make_config):
    tied, untied = GenesisLM(make_config()), GenesisLM(make_config(tie_embeddings=False))
    assert tied.lm_head is None and "lm_head.weight" not in tied.state_dict()
    ids = torch.randint(0, tied.config.vocab_size, (1, 5))
    torch.testing.assert_close(tied(ids), tied.hidden_states(ids) @ tied.embed.weight.T)
    assert untied.lm_head.weight.shape == (untied.config.vocab_size, untied.config.d_model)


def test_bf16_autocast_training_step_is_close_to_fp32(make_config):
    model = GenesisLM(make_config())
    ids = torch.randint(0, 97, (2, 16))
    fp32 = F.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids)
        bf16 = F.cross_entropy(logits.flatten(0, 1).float(), ids.flatten())
    bf16.backward()
    assert logits.dtype == torch.bfloat16
    assert bf16.item() == pytest.approx(fp32.item(), rel=2e-2)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_compiles_to_one_graph(make_config):
    model = GenesisLM(make_config())
    ids = torch.randint(0, 97, (2, 16))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(ids), model(ids))


def test_sequence_longer_than_max_seq_len_is_rejected(make_config):
    model = GenesisLM(make_config(max_seq_len=8))
    with pytest.raises(ValueError, match="9 tokens exceed max_seq_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("shape", [(1, 1, 24), (1, 24), (24,), (3, 1, 24)])
def test_linear_matches_float64_for_every_row_layout(shape):
    """One bf16 row takes the matrix-vector kernel; it must give the matmul's answer in every layout."""
    from genesis_model.model import linear

    weight = torch.randn(40, 24)
    x = torch.randn(shape)
    expected = x.double() @ weight.double().T
    torch.testing.assert_close(linear(x, weight).double(), expected, atol=1e-5, rtol=1e-5)
    bf16 = linear(x.bfloat16(), weight.bfloat16())
    assert bf16.dtype == torch.bfloat16 and bf16.shape == expected.shape
    torch.testing.assert_close(bf16.double(), expected, atol=0.1, rtol=0.02)
