"""GenesisLM: a Llama-style decoder (RoPE, SwiGLU, RMSNorm) with DeepNorm residuals, read top to bottom.

Shapes: B batch, T tokens, H query heads, K key/value heads, D head size, d width, V vocabulary.
Two paths, one at a time:
- `forward` (training, scoring): the ordinary batched computation; attention through
  `genesis_kernels.flash_attention` (causal, no mask: batches are right-padded, so real tokens never see padding).
- `decode_step` (generation): the same arithmetic for new tokens through a pre-allocated, static-shape `KVCache`,
  attending over it through `genesis_kernels.decode_attention` (which also applies RoPE and writes the cache). A
  single row (batch-1 decoding) takes genesis_kernels' one-row kernels: `matvec` for the projections (SwiGLU
  folded into the down projection) and `residual_norm_matvec` for DeepNorm's attention residual with the MLP's
  gate/up projection. Each module's decoding lives in its `decode_step`, beside its `forward`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from genesis_kernels import (apply_rotary, decode_attention, flash_attention, matvec, residual_norm,
                             residual_norm_matvec, swiglu)

from .config import ModelConfig


def one_row(x: torch.Tensor) -> bool:
    """Whether x holds a single row (batch-1 decoding): the case genesis_kernels' decoding ops are made for."""
    return x.numel() == x.shape[-1]


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T for decoding. A single row goes through `genesis_kernels.matvec`, the projection kernel made for
    one row: general matmul kernels read the weights of such a product well below the memory bandwidth."""
    if one_row(x):
        return matvec(x, weight)
    return F.linear(x, weight)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for every position up to max_seq_len, built once (non-persistent buffers, never saved)."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float):
        super().__init__()
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        self.register_buffer("cos", torch.empty(max_seq_len, head_dim), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq_len, head_dim), persistent=False)
        self.reset_parameters()

    def reset_parameters(self, device: torch.device | str | None = None) -> None:
        """(Re)build the tables; a checkpoint loaded onto a meta-initialized model calls this with its device."""
        device = self.cos.device if device is None else device
        if torch.device(device).type == "meta":
            return
        # float64 angles: position * frequency loses digits in fp32 at long contexts.
        inv_freq = self.theta ** -(torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim)
        angles = torch.outer(torch.arange(self.max_seq_len, dtype=torch.float64), inv_freq)
        self.cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(device=device, dtype=torch.float32)
        # The sign of the rotation's first half is folded into the table: see apply_rotary.
        self.sin = torch.cat([-angles.sin(), angles.sin()], dim=-1).to(device=device, dtype=torch.float32)


class KVCache:
    """Pre-allocated keys and values of every layer for incremental decoding, with static shapes throughout.

    Prompts of different lengths are left-padded, so all rows write the same slots at every step. The write
    position is a 0-d tensor advanced in place and attention always spans all `max_len` slots under a mask, so
    a decode step has the same shapes and reads no Python state that changes: it compiles once and can be
    captured as one CUDA graph. Each row's rotary positions start at its first real token, so a padded row
    computes exactly what it would alone.
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, *, device=None, dtype=None,
                 left_padding: torch.Tensor | None = None):
        if max_len > config.max_seq_len:
            raise ValueError(f"KVCache: {max_len} positions exceed the model's max_seq_len={config.max_seq_len}")
        # One tensor per layer, not one (n_layers, ...) tensor: a compiled step writes each layer's slot in place,
        # whereas a write into a view of one big tensor is compiled into a copy of the whole tensor, every layer.
        shape = (batch_size, config.n_kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.slots = torch.arange(max_len, device=device)
        self.visible = torch.empty(batch_size, max_len, max_len, dtype=torch.bool, device=device)
        self.positions = torch.empty(batch_size, max_len, dtype=torch.long, device=device)
        self.length = torch.zeros((), dtype=torch.long, device=device)  # slots filled so far
        self.reset(left_padding)

    def reset(self, left_padding: torch.Tensor | None = None) -> None:
        """Start a new generation, rows left-padded by `left_padding` (B,) slots, in place: the tensors keep their
        addresses, so a step compiled (or captured as a CUDA graph) for this cache serves the next generation."""
        batch_size = self.positions.shape[0]
        padding = torch.zeros(batch_size, dtype=torch.long, device=self.slots.device) if left_padding is None \
            else left_padding.to(device=self.slots.device, dtype=torch.long)
        real_keys = self.slots[None, :] >= padding[:, None]  # (B, max_len): False on left padding
        queries, keys = self.slots[:, None], self.slots[None, :]
        # visible[b, i, j]: may the token in slot i see slot j? Real keys up to itself; a padding query also sees
        # itself, which keeps its unused output finite (a row of -inf gives NaN, and NaN values poison even keys
        # masked to zero weight).
        self.visible.copy_((real_keys[:, None, :] | (keys == queries)) & (keys <= queries))  # (B, max_len, max_len)
        self.positions.copy_((self.slots[None, :] - padding[:, None]).clamp(min=0))  # (B, max_len) rotary positions
        self.length.zero_()
        self._mask: torch.Tensor | None = None
        self._write_slots: torch.Tensor | None = None
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the cache owns (their addresses must stay fixed for CUDA graph replay)."""
        return [*self.keys, *self.values, self.slots, self.visible, self.positions, self.length]

    def start_step(self, rope: RotaryEmbedding, T: int) -> None:
        """Select, once for every layer, the slots the next T tokens write, their mask rows and rotary tables."""
        queries = self.length + self.slots[:T]  # (T,) the slots being written
        self._mask = self.visible[:, queries]  # (B, T, max_len)
        self._write_slots = queries
        positions = self.positions[:, queries]  # (B, T)
        self._cos, self._sin = rope.cos[positions], rope.sin[positions]  # (B, T, D)

    def attend(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        """Rotate this step's (B, T, H + 2K, D) fused projection, store its keys/values, attend: (B, T, H, D)."""
        return decode_attention(qkv, self._cos, self._sin, self.keys[layer], self.values[layer], self._mask,
                                self._write_slots)

    def advance(self, T: int) -> None:
        self.length += T


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.qkv = nn.Linear(config.d_model, config.d_model + 2 * config.kv_dim, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, self.n_heads + 2 * self.n_kv_heads, self.head_dim)
        rotated, v = qkv.split([self.n_heads + self.n_kv_heads, self.n_kv_heads], dim=2)
        q, k = apply_rotary(rotated, cos, sin).split([self.n_heads, self.n_kv_heads], dim=2)  # one rotation for both
        # v is a slice of the fused projection, its rows (H + 2K) * D apart: SDPA's CPU kernels run the training
        # step's attention ~10% faster on a compact copy.
        y = flash_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2).contiguous(), causal=True)
        return self.out(y.transpose(1, 2).reshape(B, T, -1))

    def decode_step(self, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        """forward for new tokens through the cache, which rotates, stores and attends in one kernel."""
        B, T, _ = x.shape
        qkv = linear(x, self.qkv.weight).view(B, T, self.n_heads + 2 * self.n_kv_heads, self.head_dim)
        return linear(cache.attend(layer, qkv).reshape(B, T, -1), self.out.weight)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(config.d_model, 2 * config.d_mlp, bias=False)
        self.down = nn.Linear(config.d_mlp, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(swiglu(gate, up))


class Block(nn.Module):
    """DeepNorm: x <- RMSNorm(alpha * x + f(x)) through the fused kernel. Pre-norm: x <- x + f(RMSNorm(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attn = Attention(config)
        self.mlp = MLP(config)
        self.attn_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.mlp_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.deepnorm = config.norm_position == "deepnorm"
        self.alpha, self.eps = config.deepnorm_alpha, config.norm_eps

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.deepnorm:
            x = self.deepnorm_residual(x, self.attn(x, cos, sin), self.attn_norm)
            return self.deepnorm_residual(x, self.mlp(x), self.mlp_norm)
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))

    def deepnorm_residual(self, x: torch.Tensor, fx: torch.Tensor, norm: nn.RMSNorm) -> torch.Tensor:
        return residual_norm(x, fx, norm.weight, alpha=self.alpha, eps=self.eps)

    def decode_step(self, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        """forward for new tokens through the cache. Several rows (a prompt, a batch) take forward's arithmetic;
        a single row takes the one-row kernels, which cross the sublayers: the down projection applies SwiGLU
        itself, and on DeepNorm the attention's residual norm also computes the MLP's gate/up projection."""
        if not one_row(x):
            if self.deepnorm:
                x = self.deepnorm_residual(x, self.attn.decode_step(x, cache, layer), self.attn_norm)
                return self.deepnorm_residual(x, self.mlp(x), self.mlp_norm)
            x = x + self.attn.decode_step(self.attn_norm(x), cache, layer)
            return x + self.mlp(self.mlp_norm(x))
        w_gate_up, w_down = self.mlp.gate_up.weight, self.mlp.down.weight
        if self.deepnorm:
            x, gate_up = residual_norm_matvec(x, self.attn.decode_step(x, cache, layer), self.attn_norm.weight,
                                              w_gate_up, alpha=self.alpha, eps=self.eps)
            return self.deepnorm_residual(x, matvec(gate_up, w_down, gated=True), self.mlp_norm)
        x = x + self.attn.decode_step(self.attn_norm(x), cache, layer)
        return x + matvec(matvec(self.mlp_norm(x), w_gate_up), w_down, gated=True)


class GenesisLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        # A post-norm (DeepNorm) block already ends in a norm; only the pre-norm stream needs a final one.
        self.final_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps) if config.norm_position == "prenorm" \
            else nn.Identity()
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.rope = RotaryEmbedding(config.head_dim, config.max_seq_len, config.rope_theta)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """DeepNet init (xavier; gain beta on the MLP, value and output projections) or GPT-2 style for pre-norm."""
        cfg = self.config
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=cfg.init_std)
        for block in self.blocks:
            block.attn_norm.reset_parameters()
            block.mlp_norm.reset_parameters()
            q, k, v = block.attn.qkv.weight.split([cfg.d_model, cfg.kv_dim, cfg.kv_dim], dim=0)
            gate, up = block.mlp.gate_up.weight.chunk(2, dim=0)
            if cfg.norm_position == "deepnorm":
                # Slices of the fused weights get the fans of the separate projections they stand for.
                for weight in (q, k):
                    nn.init.xavier_normal_(weight, gain=1.0)
                for weight in (v, block.attn.out.weight, gate, up, block.mlp.down.weight):
                    nn.init.xavier_normal_(weight, gain=cfg.deepnorm_beta)
            else:
                nn.init.normal_(block.attn.qkv.weight, std=cfg.init_std)
                nn.init.normal_(block.mlp.gate_up.weight, std=cfg.init_std)
                for weight in (block.attn.out.weight, block.mlp.down.weight):
                    nn.init.normal_(weight, std=cfg.init_std / (2 * cfg.n_layers) ** 0.5)
        if isinstance(self.final_norm, nn.RMSNorm):
            self.final_norm.reset_parameters()

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, d) final normalized hidden states (the input of the LM head and the pooler)."""
        T = input_ids.shape[1]
        if T > self.config.max_seq_len:
            raise ValueError(f"GenesisLM: {T} tokens exceed max_seq_len={self.config.max_seq_len}")
        cos, sin = self.rope.cos[:T, None], self.rope.sin[:T, None]
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.final_norm(x)

    @property
    def output_weight(self) -> torch.Tensor:
        """The LM head's (V, d) weight: the embedding's when tied."""
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.output_weight)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.logits(self.hidden_states(input_ids))

    def decode_hidden_states(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """hidden_states for (B, T) new tokens that follow the ones already in `cache`, which takes them in."""
        T = input_ids.shape[1]
        cache.start_step(self.rope, T)
        x = self.embed(input_ids)
        for layer, block in enumerate(self.blocks):
            x = block.decode_step(x, cache, layer)
        cache.advance(T)
        return self.final_norm(x)

    def decode_step(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """(B, T) new tokens through the cache -> (B, V) logits of the last position, the next token's."""
        return linear(self.decode_hidden_states(input_ids, cache)[:, -1], self.output_weight)
