import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from genesis_model import ModelConfig

SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|sep|>"]
CORPUS = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void; and darkness was upon the face of the deep.",
    "And God said, Let there be light: and there was light.",
    "Au commencement, Dieu créa les cieux et la terre.",
    "בְּרֵאשִׁית בָּרָא אֱלֹהִים",
]


@pytest.fixture(autouse=True)
def torch_kernels(monkeypatch):
    """The eager kernel backend: the root conftest turns on the (slow) Triton interpreter for kernel tests."""
    monkeypatch.setenv("GENESIS_KERNELS_BACKEND", "torch")


def small_config(**overrides) -> ModelConfig:
    """A model small enough for exact float comparisons in milliseconds."""
    fields = dict(d_model=32, n_layers=2, n_heads=4, vocab_size=97, max_seq_len=48)
    return ModelConfig(**{**fields, **overrides})


@pytest.fixture
def tokenizer_file(tmp_path):
    """A byte-level BPE tokenizer.json with genesis-data's special tokens, trained on a few verses."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture
def make_config():
    return small_config
