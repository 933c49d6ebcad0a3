import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from genesis_data.corpus import Corpus, Translation
from genesis_data.tokenizer import (
    ADDED_SPECIAL_TOKENS,
    ATOMIC_WORDS,
    encode_verses,
    load_or_train_tokenizer,
    special_token_ids,
    token_dtype,
    train_bpe_tokenizer,
    train_char_tokenizer,
)

ROUND_TRIP_TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "  double  spaces,\ttabs\nand newlines\r\n ",
    "地 是 空虛 混沌。\u3000神的靈",
    "בְּרֵאשִׁית בָּרָא · Ἐν ἀρχῇ ἦν ὁ λόγος · ᏗᎧᎿᏩᏛᏍᏗ",
    "𐌰𐍄𐍄𐌰 𐌿𐌽𐍃𐌰𐍂 (Gothic, outside the BMP) \ufffd",
    "Jehovah, JEHOVAH; (Jehovah) Jehovah's Jehovah-jireh\nJehovah",
]

JEHOVAH_CONTEXTS = ["Jehovah", " Jehovah", "Jehovah,", "(Jehovah)", "\nJehovah.", "Jehovah's", "Jehovah-nissi",
                    "saith Jehovah:", '"Jehovah"', "xJehovahx"]


@pytest.fixture(scope="module")
def bpe(builtin_bpe) -> Tokenizer:
    return Tokenizer.from_file(str(builtin_bpe))


@pytest.fixture(scope="module")
def char(builtin_corpus, cache_dir) -> Tokenizer:
    return Tokenizer.from_file(str(load_or_train_tokenizer(builtin_corpus, "char", 384, cache_dir)))


@pytest.fixture(params=["bpe", "char"])
def tokenizer(request, bpe, char) -> Tokenizer:
    return {"bpe": bpe, "char": char}[request.param]


def test_special_tokens_have_fixed_ids(tokenizer):
    assert special_token_ids(tokenizer) == {"pad": 0, "bos": 1, "eos": 2, "sep": 3, "unk": 4}
    assert [tokenizer.id_to_token(index) for index in range(5, 9)] == [f"<|reserved_{i}|>" for i in range(4)]
    assert tokenizer.decode([1, 5, 8, 2]) == ""  # every special and reserved id is skipped by decode


def test_round_trip_is_exact(tokenizer):
    for text in ROUND_TRIP_TEXTS:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text


@pytest.mark.parametrize("context", JEHOVAH_CONTEXTS)
def test_jehovah_is_one_atomic_token(tokenizer, context):
    encoding = tokenizer.encode(context)
    jehovah = tokenizer.token_to_id("Jehovah")
    assert encoding.ids.count(jehovah) == 1
    assert not any("Jeho" in token and token != "Jehovah" for token in encoding.tokens)


def test_all_capitals_jehovah_is_atomic_too(tokenizer):
    assert tokenizer.encode("my name JEHOVAH was").ids.count(tokenizer.token_to_id("JEHOVAH")) == 1
    assert tokenizer.token_to_id("JEHOVAH") != tokenizer.token_to_id("Jehovah")


def test_every_jehovah_in_the_asv_is_one_token(bpe, builtin_corpus):
    jehovah = bpe.token_to_id("Jehovah")
    verses = builtin_corpus["ASV"].texts
    tokens, _ = encode_verses(bpe, verses)
    assert int((tokens == jehovah).sum()) == sum(text.count("Jehovah") for text in verses) == 6_879


def test_file_is_a_plain_hf_tokenizer(builtin_bpe):
    document = json.loads(builtin_bpe.read_text())
    assert document["model"]["type"] == "BPE"
    added = {token["content"]: token for token in document["added_tokens"]}
    assert all(added[token]["special"] for token in ADDED_SPECIAL_TOKENS)
    assert all(not added[word]["special"] for word in ATOMIC_WORDS)


def test_bpe_vocabulary_has_the_requested_size(bpe):
    assert bpe.get_vocab_size() == 512
    assert bpe.token_to_id("Jehovah") == 510 and bpe.token_to_id("JEHOVAH") == 511


def test_char_tokenizer_is_one_token_per_character(char):
    text = "And God said, Let there be light"
    assert char.encode(text).tokens == list(text)
    # Characters outside the vocabulary fall back to UTF-8 bytes and still decode.
    assert char.encode("神").tokens == ["<0xE7>", "<0xA5>", "<0x9E>"]
    assert char.get_vocab_size() <= 384


def test_tokenizer_is_trained_once_then_reused(builtin_corpus, cache_dir, builtin_bpe):
    modified = builtin_bpe.stat().st_mtime_ns
    assert load_or_train_tokenizer(builtin_corpus, "bpe", 512, cache_dir) == builtin_bpe
    assert builtin_bpe.stat().st_mtime_ns == modified


def test_another_corpus_gets_another_tokenizer(builtin_corpus, cache_dir, builtin_bpe):
    asv_only = Corpus([builtin_corpus["ASV"]])
    assert load_or_train_tokenizer(asv_only, "bpe", 512, cache_dir) != builtin_bpe


def test_bad_options_are_clear_errors(builtin_corpus, cache_dir):
    with pytest.raises(ValueError, match="--tokenizer 'wordpiece'"):
        load_or_train_tokenizer(builtin_corpus, "wordpiece", 512, cache_dir)
    with pytest.raises(ValueError, match="--vocab-size 100"):
        train_bpe_tokenizer(["a"], 100)
    with pytest.raises(ValueError, match="--vocab-size 200"):
        train_char_tokenizer(["a"], 200)


def test_encode_verses_matches_one_by_one_encoding(bpe):
    texts = ["In the beginning.", "Jehovah is my shepherd.", "地 是 空虛"]
    tokens, offsets = encode_verses(bpe, texts)
    assert tokens.dtype == np.uint16
    for index, text in enumerate(texts):
        assert tokens[offsets[index] : offsets[index + 1]].tolist() == bpe.encode(" " + text).ids


def test_token_dtype():
    assert token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32


def test_training_on_a_small_translation():
    tiny = Translation("Tiny", "en", "test", keys=[1001001], texts=["Jehovah spake unto Moses."], fingerprint="t")
    tokenizer = train_bpe_tokenizer(Corpus([tiny]).iter_texts(), 300)
    assert tokenizer.decode(tokenizer.encode(" Jehovah spake").ids) == " Jehovah spake"
