"""genesis_model: Micro-Llama models with DeepNorm, multi-task heads, safetensors checkpoints, KV-cache generation.

Depends on genesis-kernels only (never on genesis-data or genesis-train): kernels + model load and generate.
"""

from .checkpoint import CheckpointError, load_pretrained, save_pretrained
from .config import PRESETS, ModelConfig, training_memory
from .generate import generate, sample_next
from .heads import MultiTaskModel
from .model import GenesisLM, KVCache
from .tokenizer import GenesisTokenizer

__all__ = [
    "CheckpointError",
    "GenesisLM",
    "GenesisTokenizer",
    "KVCache",
    "ModelConfig",
    "MultiTaskModel",
    "PRESETS",
    "generate",
    "load_pretrained",
    "sample_next",
    "save_pretrained",
    "training_memory",
]
