import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from genesis_data.blocks import (
    IGNORE_INDEX,
    TokenizedCorpus,
    held_out_verses,
    lm_batch,
    lm_stream,
    random_block_starts,
    spread_block_starts,
)
from genesis_data.corpus import Corpus, Translation
from genesis_data.tokenizer import load_or_train_tokenizer

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def tokenized(builtin_corpus, builtin_bpe, cache_dir) -> TokenizedCorpus:
    return TokenizedCorpus.load_or_build(builtin_corpus, builtin_bpe, cache_dir)


def test_cache_holds_every_verse_encoded_with_a_leading_space(tokenized, builtin_corpus, builtin_bpe):
    tokenizer = Tokenizer.from_file(str(builtin_bpe))
    assert isinstance(tokenized.tokens, np.memmap)
    assert len(tokenized.offsets) == sum(len(t) for t in builtin_corpus.translations) + 1
    kjv = builtin_corpus.names.index("KJV")
    first_kjv_verse = int(tokenized.translation_starts[kjv])
    for verse in (0, 12_345, first_kjv_verse, len(tokenized.offsets) - 2):
        translation = builtin_corpus.translations[tokenized.translation_of(verse)]
        text = translation.texts[verse - int(tokenized.translation_starts[tokenized.translation_of(verse)])]
        assert tokenizer.decode(tokenized.verse_tokens(verse).tolist()) == " " + text


def test_cache_is_reused(builtin_corpus, builtin_bpe, cache_dir, tokenized):
    again = TokenizedCorpus.load_or_build(builtin_corpus, builtin_bpe, cache_dir)
    assert again.cache_path == tokenized.cache_path


def test_cache_is_rebuilt_when_corpus_or_tokenizer_changes(tmp_path):
    folder = tmp_path / "bible"
    folder.mkdir()
    shutil.copy(FIXTURES / "formats" / "Mini.txt", folder / "MiniTxt.txt")
    shutil.copy(FIXTURES / "formats" / "Mini.json", folder / "MiniJson.json")
    mini = Corpus.from_bible_dir(folder, cache_dir=tmp_path)
    bpe = load_or_train_tokenizer(mini, "bpe", 300, tmp_path)
    char = load_or_train_tokenizer(mini, "char", 300, tmp_path)
    built = TokenizedCorpus.load_or_build(mini, bpe, tmp_path)
    fewer = Corpus(mini.translations[:1])
    assert TokenizedCorpus.load_or_build(fewer, bpe, tmp_path).cache_path != built.cache_path
    rebuilt = TokenizedCorpus.load_or_build(mini, char, tmp_path)
    assert rebuilt.cache_path != built.cache_path
    # One token per character, except the atomic words: 7 characters, 1 token.
    characters = sum(len(" " + text) for text in mini.iter_texts())
    atomic = sum(text.count("Jehovah") + text.count("JEHOVAH") for text in mini.iter_texts())
    assert len(rebuilt.tokens) == characters - 6 * atomic
    assert len(list((tmp_path / "tokens").iterdir())) == 3


def test_validation_holds_out_whole_chapters_in_every_translation(builtin_corpus, tokenized):
    held_out = held_out_verses(builtin_corpus, tokenized.keys, 0.02, seed=0)
    chapters = tokenized.keys // 1_000
    held_chapters = set(chapters[held_out].tolist())
    train_chapters = set(chapters[~held_out].tolist())
    assert not held_chapters & train_chapters
    assert 0.01 < len(held_chapters) / len(set(chapters.tolist())) < 0.03
    # The same chapters in each translation.
    per_translation = [
        set(chapters[start:stop][held_out[start:stop]].tolist())
        for start, stop in zip(tokenized.translation_starts[:-1], tokenized.translation_starts[1:])
    ]
    assert per_translation[0] == per_translation[1] == per_translation[2] == held_chapters


def test_split_depends_on_the_seed_and_not_on_the_other_translations(builtin_corpus, tokenized):
    held = held_out_verses(builtin_corpus, tokenized.keys, 0.02, seed=0)
    assert np.array_equal(held, held_out_verses(builtin_corpus, tokenized.keys, 0.02, seed=0))
    assert not np.array_equal(held, held_out_verses(builtin_corpus, tokenized.keys, 0.02, seed=1))
    kjv_only = Corpus([builtin_corpus["KJV"]])
    start, stop = tokenized.translation_starts[1:3]
    assert np.array_equal(held_out_verses(kjv_only, builtin_corpus["KJV"].keys, 0.02, 0), held[start:stop])


def test_tiny_corpus_still_gets_a_validation_chapter():
    tiny = Corpus([Translation("T", "en", "test", [1001001, 1001002, 1002001], ["a", "b", "c"], "t")])
    held = held_out_verses(tiny, tiny.translations[0].keys, 0.02)
    assert held.sum() in (1, 2) and len(set((tiny.translations[0].keys[held] // 1000).tolist())) == 1


def test_plain_text_is_split_by_sections():
    keys = np.arange(1, 4001)
    running = Corpus([Translation("R", "en", "plain-text", keys, ["x"] * 4000, "r", aligned=False)])
    held = held_out_verses(running, keys, 0.1)
    sections = keys // 40
    assert not set(sections[held].tolist()) & set(sections[~held].tolist())
    assert 0.02 < held.mean() < 0.25


def test_lm_stream_is_the_selected_verses_in_order_with_eos_between_translations(tokenized):
    selected = np.zeros(len(tokenized.keys), dtype=bool)
    kjv_start = int(tokenized.translation_starts[1])
    selected[[0, 1, kjv_start]] = True
    stream = lm_stream(tokenized, selected, eos_id=2)
    expected = [*tokenized.verse_tokens(0, 2).tolist(), 2, *tokenized.verse_tokens(kjv_start).tolist(), 2, 2]
    assert stream.tolist() == expected


def test_lm_batch_labels_are_inputs_shifted_by_one():
    stream = np.arange(100, 200, dtype=np.uint16)
    batch = lm_batch(stream, np.array([0, 10, 99 - 8]), block_size=8, pad_id=0)
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.int64
    assert batch["input_ids"][1].tolist() == list(range(110, 118))
    assert batch["labels"][1].tolist() == list(range(111, 119))
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])


def test_short_stream_is_padded_with_no_target():
    batch = lm_batch(np.array([5, 6, 7], dtype=np.uint16), np.array([0]), block_size=6, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0, 0]]
    assert batch["labels"].tolist() == [[6, 7] + [IGNORE_INDEX] * 4]


def test_block_starts():
    rng = np.random.default_rng(0)
    starts = random_block_starts(rng, 1000, 16, 10_000)
    assert starts.min() >= 0 and starts.max() == 1000 - 17
    assert spread_block_starts(1000, 16, 3).tolist() == [0, 492, 983]
