"""Model configuration, the named presets, and the parameter / memory arithmetic behind `genesis-model presets`.

Everything here is plain Python (no torch) so the numbers can be printed for a 1B-parameter preset without
building it; tests check them against `sum(p.numel())` of instantiated models.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

NORM_POSITIONS = ("deepnorm", "prenorm")


def swiglu_hidden_size(d_model: int) -> int:
    """The Llama rule: 8/3 of the width (keeps a SwiGLU MLP at the FLOPs of a 4x GELU MLP), rounded up to 16."""
    return -(-8 * d_model // (3 * 16)) * 16


@dataclass
class ModelConfig:
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: one key/value head per query head; fewer: grouped-query attention
    d_mlp: int | None = None  # None: swiglu_hidden_size(d_model)
    vocab_size: int = 8192
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    norm_position: str = "deepnorm"  # "deepnorm": x <- Norm(alpha * x + f(x)); "prenorm": x <- x + f(Norm(x))
    tie_embeddings: bool = True
    init_std: float = 0.02  # token embeddings (both norm positions) and pre-norm linear layers

    def __post_init__(self) -> None:
        # Types and ranges first: a config.json can hold anything, and the derived sizes below need integers.
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_mlp", "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if value is None and name in ("n_kv_heads", "d_mlp"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        for name in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
                raise ValueError(f"ModelConfig.{name} must be a finite number > 0, got {value!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"ModelConfig.tie_embeddings must be true or false, got {self.tie_embeddings!r}")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_mlp is None:
            self.d_mlp = swiglu_hidden_size(self.d_model)
        if self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"ModelConfig: n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig: head_dim={self.head_dim} must be even for rotary embeddings")
        if self.norm_position not in NORM_POSITIONS:
            raise ValueError(f"ModelConfig.norm_position must be one of {NORM_POSITIONS}, got {self.norm_position!r}")

    # -- derived shapes -------------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def deepnorm_alpha(self) -> float:
        """Residual up-weighting of DeepNet's decoder-only case, (2N)^(1/4); 1 (a plain residual) for pre-norm."""
        return (2 * self.n_layers) ** 0.25 if self.norm_position == "deepnorm" else 1.0

    @property
    def deepnorm_beta(self) -> float:
        """DeepNet's init gain for the MLP, value and output projections, (8N)^(-1/4)."""
        return (8 * self.n_layers) ** -0.25

    # -- construction and serialization ---------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ModelConfig":
        if name not in PRESET_FIELDS:
            raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESET_FIELDS)}")
        return cls(**{**PRESET_FIELDS[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "ModelConfig":
        # Checkpoints written before gradient checkpointing became a training option (genesis-train) recorded it.
        data = {k: v for k, v in data.items() if k != "gradient_checkpointing"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown model config field(s) {', '.join(unknown)}")
        return cls(**data)

    # -- parameter arithmetic -------------------------------------------------------------------------------------
    def layer_parameters(self) -> int:
        d = self.d_model
        attention = d * (d + 2 * self.kv_dim) + d * d  # fused q/k/v, output projection
        mlp = d * 2 * self.d_mlp + self.d_mlp * d  # fused gate/up, down projection
        norms = 2 * d
        return attention + mlp + norms

    def num_parameters(self) -> int:
        """Parameters of GenesisLM (no task heads)."""
        embedding = self.vocab_size * self.d_model
        lm_head = 0 if self.tie_embeddings else self.vocab_size * self.d_model
        final_norm = self.d_model if self.norm_position == "prenorm" else 0
        return embedding + self.n_layers * self.layer_parameters() + final_norm + lm_head

    def head_parameters(self) -> int:
        """Parameters MultiTaskModel adds: a coherence logit (with bias) and two d x d embedding projections."""
        d = self.d_model
        return (d + 1) + 2 * d * d


# The seed shapes (layers, width, heads) from the original design, plus two CPU-sized presets. Only the declared
# fields are stored, so an override of the width or heads re-derives the MLP size and key/value heads.
PRESET_FIELDS: dict[str, dict] = {
    "tiny": dict(d_model=256, n_layers=6, n_heads=4, max_seq_len=256),
    "small": dict(d_model=512, n_layers=8, n_heads=8, max_seq_len=512),
    # The grokking experiments' transformer (Nanda et al. 2023 used one layer of width 128; Power et al. two).
    "grokking": dict(d_model=128, n_layers=2, n_heads=4, max_seq_len=16),
    **{
        name: dict(d_model=width, n_layers=layers, n_heads=heads, max_seq_len=1024)
        for name, (layers, width, heads) in {
            "deep_narrow_32": (32, 640, 10),
            "deep_narrow_40": (40, 768, 12),
            "deep_narrow_48": (48, 896, 14),
            "deep_narrow_60": (60, 768, 12),
            "theos_small": (80, 1024, 16),
            "deep_narrow_100": (100, 1024, 16),
            "microscope": (12, 768, 12),
            "tower_of_truth": (144, 288, 12),
            "high_res_arbiter": (24, 1024, 16),
        }.items()
    },
}
PRESETS: dict[str, ModelConfig] = {name: ModelConfig(**fields) for name, fields in PRESET_FIELDS.items()}


# -- work per token ----------------------------------------------------------------------------------------------
def matmul_parameters(cfg: ModelConfig) -> int:
    """Weights that enter a matrix product once per token: every projection and the LM head (tied or not)."""
    return sum(out * in_ for out, in_ in projection_shapes(cfg))


def projection_shapes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(out, in) of every matrix a token goes through in GenesisLM, in order: the fused q/k/v, output, fused
    gate/up and down projections of each layer, then the LM head."""
    d, kv, m = cfg.d_model, cfg.kv_dim, cfg.d_mlp
    return [(d + 2 * kv, d), (d, d), (2 * m, d), (d, m)] * cfg.n_layers + [(cfg.vocab_size, d)]


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Forward + backward (3x the forward): 2 FLOPs per weight, plus causal attention's QK^T and PV, whose
    average query sees seq_len / 2 keys: 2 * 2 * d * seq_len / 2 per layer."""
    forward = 2 * matmul_parameters(cfg) + 2 * cfg.n_layers * cfg.d_model * seq_len
    return 3 * forward


# -- training memory estimate -----------------------------------------------------------------------------------
GiB = 1024**3
ADAMW_BYTES_PER_PARAM = 8  # two fp32 moments
CUDA_CONTEXT_BYTES = 1 * GiB  # CUDA context, allocator slack and kernels' workspaces, a round allowance


@dataclass(frozen=True)
class TrainingMemory:
    """Estimated peak bytes of one bf16-autocast training step with fp32 weights and AdamW."""

    weights: int
    grads: int
    adamw: int
    activations: int
    activations_checkpointed: int

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.adamw + self.activations

    @property
    def total_checkpointed(self) -> int:
        return self.weights + self.grads + self.adamw + self.activations_checkpointed


def activation_bytes_per_token_per_layer(cfg: ModelConfig, autocast: bool = True) -> int:
    """Bytes one block keeps for backward per token under 16-bit autocast (the residual stream stays fp32), or in
    plain fp32 training with `autocast=False`.

    Counted from the tensors autograd saves (tests/genesis_model/test_config.py measures them): in 16 bits under
    autocast (else fp32) the three linear inputs, the rotated q and k, the compact copy of v, the gate/up projection,
    silu(gate) and the SwiGLU product; in fp32 four residual-stream tensors around the two norms, their 1/rms, and
    attention's per-head log-sum-exp.
    """
    d, kv, m = cfg.d_model, cfg.kv_dim, cfg.d_mlp
    cast_elements = 3 * d + (d + kv) + kv + 4 * m
    fp32_elements = 4 * d + 2 + cfg.n_heads
    return (2 if autocast else 4) * cast_elements + 4 * fp32_elements


def training_memory(cfg: ModelConfig, batch_size: int, seq_len: int, with_heads: bool = True,
                    autocast: bool = True) -> TrainingMemory:
    """The estimate for bf16/fp16 autocast over fp32 weights, or for plain fp32 training with `autocast=False`."""
    params = cfg.num_parameters() + (cfg.head_parameters() if with_heads else 0)
    tokens = batch_size * seq_len
    # Autocast keeps a 16-bit copy of every matrix it casts (all but the norm weights) for the backward pass.
    weight_copies = 2 * cfg.n_layers * (cfg.layer_parameters() - 2 * cfg.d_model) if autocast else 0
    # The logits (16-bit under autocast), the fp32 log-softmax cross-entropy keeps, the fp32 gradient of the logits.
    logits = tokens * cfg.vocab_size * ((2 if autocast else 4) + 4 + 4)
    embeddings = tokens * cfg.d_model * 4
    per_token = activation_bytes_per_token_per_layer(cfg, autocast)
    blocks = cfg.n_layers * tokens * per_token + weight_copies
    # With checkpointing each block keeps only its fp32 input; one block at a time is recomputed in backward.
    checkpointed = cfg.n_layers * tokens * cfg.d_model * 4 + tokens * per_token
    return TrainingMemory(
        weights=4 * params,
        grads=4 * params,
        adamw=ADAMW_BYTES_PER_PARAM * params,
        activations=blocks + logits + embeddings,
        activations_checkpointed=checkpointed + logits + embeddings,
    )


def inference_memory(cfg: ModelConfig, bytes_per_weight: int, with_heads: bool) -> dict[str, int]:
    """Bytes a model of this configuration takes once loaded, by part, each part named with the fields that size it:
    the layers, the embedding (and the LM head when untied), the task heads, and the rotary tables (two fp32 tables
    of max_seq_len x head_dim, built from float64 angles: about 32 bytes an entry at their peak)."""
    embedding = cfg.num_parameters() - cfg.n_layers * cfg.layer_parameters()
    return {
        f"the layers (n_layers={cfg.n_layers}, d_model={cfg.d_model}, d_mlp={cfg.d_mlp})":
            bytes_per_weight * cfg.n_layers * cfg.layer_parameters(),
        f"the embeddings (vocab_size={cfg.vocab_size}, d_model={cfg.d_model})": bytes_per_weight * embedding,
        f"the task heads (d_model={cfg.d_model})": bytes_per_weight * cfg.head_parameters() if with_heads else 0,
        f"the rotary tables (max_seq_len={cfg.max_seq_len}, head_dim={cfg.head_dim})":
            32 * cfg.max_seq_len * cfg.head_dim,
    }


def fits_in(memory: TrainingMemory, gpu_bytes: int) -> str:
    """'yes', 'with checkpointing' or 'no' for a GPU of that many bytes, after the CUDA context allowance."""
    budget = gpu_bytes - CUDA_CONTEXT_BYTES
    if memory.total <= budget:
        return "yes"
    if memory.total_checkpointed <= budget:
        return "ckpt"
    return "no"


def parameters_human(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def bytes_human(n: float) -> str:
    if n >= 1024 * GiB:  # only an absurd configuration comes here (see checkpoint.check_memory)
        return f"{n / 1024**4:,.1f} TiB"
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 1024**2:.0f} MiB"

