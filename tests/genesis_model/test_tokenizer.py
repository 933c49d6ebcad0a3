import pytest
from tokenizers import Tokenizer

from genesis_model import GenesisTokenizer, save_pretrained

TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "Au commencement, Dieu créa les cieux et la terre.",
    "בְּרֵאשִׁית בָּרָא אֱלֹהִים",
    "Jehovah  said:\n\tlet there be light 🌅",
]


def test_special_token_ids_come_from_the_vocabulary(tokenizer_file):
    tokenizer = GenesisTokenizer.from_file(tokenizer_file)
    raw = Tokenizer.from_file(str(tokenizer_file))
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.sep_id) == tuple(
        raw.token_to_id(t) for t in ("<|pad|>", "<|bos|>", "<|eos|>", "<|sep|>")) == (0, 1, 2, 3)
    assert tokenizer.vocab_size == raw.get_vocab_size() == 300


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_round_trip(tokenizer_file, text):
    tokenizer = GenesisTokenizer.from_file(tokenizer_file)
    ids = tokenizer.encode(text)
    assert ids[0] == tokenizer.bos_id and tokenizer.bos_id not in ids[1:]
    assert ids[1:] == tokenizer.encode(text, add_bos=False)
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("text", TEXTS)
def test_streamed_pieces_join_to_the_full_decode(tokenizer_file, text):
    tokenizer = GenesisTokenizer.from_file(tokenizer_file)
    stream = tokenizer.stream()
    pieces = [stream.push(token) for token in tokenizer.encode(text)]
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)  # split characters are held back, never shown broken


def test_from_pretrained_reads_the_checkpoint_copy(tmp_path, tokenizer_file, make_config):
    from genesis_model import GenesisLM

    save_pretrained(GenesisLM(make_config()), tmp_path / "ckpt", tokenizer_file=tokenizer_file)
    assert GenesisTokenizer.from_pretrained(tmp_path / "ckpt").encode(TEXTS[0]) == \
        GenesisTokenizer.from_file(tokenizer_file).encode(TEXTS[0])


def test_missing_and_broken_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json: tokenizer file not found"):
        GenesisTokenizer.from_file(tmp_path / "nothing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": 42}')
    with pytest.raises(ValueError, match="broken.json: not a tokenizers tokenizer.json"):
        GenesisTokenizer.from_file(broken)


@pytest.fixture
def metaspace_tokenizer_file(tmp_path):
    """A SentencePiece-style tokenizer, whose decoder drops the leading space of a sequence."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(TEXTS[:2], trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<|bos|>"]))
    path = tmp_path / "metaspace.json"
    tokenizer.save(str(path))
    return path


@pytest.mark.parametrize("which", ["tokenizer_file", "metaspace_tokenizer_file"])
def test_streaming_after_a_prompt_keeps_the_word_boundary(request, which):
    tokenizer = GenesisTokenizer.from_file(request.getfixturevalue(which))
    ids = tokenizer.encode(TEXTS[0], add_bos=False)
    prompt = tokenizer.encode("In the", add_bos=False)
    assert ids[:len(prompt)] == prompt
    stream = tokenizer.stream(context=prompt)
    continuation = "".join(stream.push(token) for token in ids[len(prompt):])
    assert continuation.startswith(" beginning")
    assert tokenizer.decode(prompt) + continuation == TEXTS[0]
