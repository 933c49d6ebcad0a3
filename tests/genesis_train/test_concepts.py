"""Concept clustering: the concepts file, the word contexts, and the silhouette against references of our own."""

import contextlib
import logging
import tomllib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from genesis_data.corpus import Corpus, Translation
from genesis_data.tokenizer import train_bpe_tokenizer
from genesis_model import ModelConfig
from genesis_model.heads import MultiTaskModel
from genesis_model.tokenizer import GenesisTokenizer
from genesis_train.callbacks.concepts import DEFAULT_CONCEPTS_FILE, ConceptClustering, find_contexts
from genesis_train.config import ConfigError

GROUPS = """
[groups]
divine = ["Jehovah", "LORD", "God"]
water = ["water", "sea", "river"]
metals = ["gold", "silver"]
"""
ASV = [
    "In the beginning God created the heavens and the earth.",
    "And Jehovah God formed man of the dust of the ground.",
    "The sea is his, and he made it; and the river ran into the sea.",
    "And the gold of that land is good; there is bdellium and the onyx stone.",
    "Bring me water, that I may drink; the silver cup is in the sack.",
    "Jehovah's word came to Abram, and God spake unto him.",
]
KJV = [
    "And the LORD God planted a garden eastward in Eden.",
    "Let the waters under the heaven be gathered: and the dry land appeared, and God saw the sea.",
    "A river went out of Eden to water the garden; silver and gold were there.",
    "Is any thing too hard for the LORD? The LORD said so. Lord, hear!",
    "Go down to the river and draw water; bring the silver, and the gold, and the brass.",
    "The God of the sea, the river and the water—the Lord of all—is the LORD.",
]


def translation(name: str, texts: list[str]) -> Translation:
    return Translation(name=name, language="en", format="test", keys=np.arange(1, len(texts) + 1), texts=texts,
                       fingerprint=name)


@pytest.fixture
def corpus():
    return Corpus([translation("ASV", ASV), translation("KJV", KJV)])


def make_tokenizer(path, texts):
    """The production byte-level BPE (with its special tokens and the atomic "Jehovah"), trained on `texts`."""
    train_bpe_tokenizer(texts, vocab_size=320).save(str(path))
    return path


@pytest.fixture
def tokenizer_file(tmp_path, corpus):
    return make_tokenizer(tmp_path / "tokenizer.json", list(corpus.iter_texts()))


@pytest.fixture
def concepts_file(tmp_path):
    path = tmp_path / "concepts.toml"
    path.write_text(GROUPS)
    return path


def fake_trainer(vocab_size: int, steps: int = 10) -> SimpleNamespace:
    torch.manual_seed(0)
    model = MultiTaskModel(ModelConfig(d_model=32, n_layers=2, n_heads=4, vocab_size=vocab_size, max_seq_len=128))
    return SimpleNamespace(model=model, device=torch.device("cpu"), autocast=contextlib.nullcontext, sharded=False,
                           cfg=SimpleNamespace(steps=steps))


def reference_silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    """Rousseeuw's silhouette in float64, straight from the definition, with cosine distance."""
    unit = points.astype(np.float64) / np.linalg.norm(points.astype(np.float64), axis=1, keepdims=True)
    distance = 1 - unit @ unit.T
    values = []
    for i in range(len(points)):
        own = (labels == labels[i]) & (np.arange(len(points)) != i)
        if not own.any():  # a point alone in its cluster scores 0
            values.append(0.0)
            continue
        a = distance[i, own].mean()
        b = min(distance[i, labels == other].mean() for other in np.unique(labels) if other != labels[i])
        values.append((b - a) / max(a, b))
    return float(np.mean(values))


# ---------------------------------------------------------------------------------------------- contexts


def test_contexts_are_whole_words_case_sensitive_and_spread_evenly(corpus):
    # "LORD" is in KJV verses 1, 4 and 6 (twice in 4) but not in "Lord"; one context per verse, first match.
    found = find_contexts(corpus, "LORD", 10)
    assert [text for text, _ in found] == [KJV[0], KJV[3], KJV[5]]
    assert all(text[start:start + 4] == "LORD" for text, start in found)
    # "water" is not matched inside "waters"; "sea" is searched in the ASV first, then the KJV.
    assert [text for text, _ in find_contexts(corpus, "water", 10)] == [ASV[4], KJV[2], KJV[4], KJV[5]]
    assert find_contexts(corpus, "Lord", 10) == [(KJV[3], KJV[3].index("Lord")), (KJV[5], KJV[5].index("Lord"))]
    # Six matches, three wanted: every second one, starting from the first.
    verses = [f"verse {i} with the word" for i in range(6)]
    single = Corpus([translation("T", verses)])
    assert [text for text, _ in find_contexts(single, "word", 3)] == [verses[0], verses[2], verses[4]]


def test_word_tokens_decode_to_the_word(corpus, concepts_file, tokenizer_file):
    callback = ConceptClustering(concepts_file, corpus, tokenizer_file, every=5)
    tokenizer = GenesisTokenizer.from_file(tokenizer_file)
    assert len(callback.input_ids) == len(callback.labels) == len(callback.occurrence_word) > 0
    for row, word_index in enumerate(callback.occurrence_word):
        length = int(callback.lengths[row])
        assert callback.input_ids[row, 0] == tokenizer.bos_id
        marked = tokenizer.decode(callback.input_ids[row][callback.word_mask[row]].tolist())
        assert callback.words[word_index] in marked
        # Only the word's own tokens, no neighbour ("LORD?" gives "LORD" plus at most a space before it).
        assert marked.strip() == callback.words[word_index]
        # The row ends at the word: later tokens cannot reach it through causal attention.
        assert callback.word_mask[row, length - 1] and not callback.word_mask[row, length:].any()


def test_long_verses_keep_the_tokens_just_before_the_word(tmp_path, tokenizer_file):
    long = "and the " * 40 + "river ran into the sea"
    corpus = Corpus([translation("T", [long, "gold and silver", "the sea", "the river"])])
    path = tmp_path / "groups.toml"
    path.write_text('[groups]\nwater = ["sea", "river"]\nmetals = ["gold", "silver"]\n')
    callback = ConceptClustering(path, corpus, tokenizer_file, every=1, max_tokens=8)
    tokenizer = GenesisTokenizer.from_file(tokenizer_file)
    assert int(callback.lengths.max()) <= 8
    for row in range(len(callback.input_ids)):
        ids = callback.input_ids[row, :int(callback.lengths[row])].tolist()
        assert ids[0] == tokenizer.bos_id
        assert tokenizer.decode(ids).endswith(("sea", "river", "gold", "silver"))


# ---------------------------------------------------------------------------------------------- the score


def test_embedding_and_score_match_independent_references(corpus, concepts_file, tokenizer_file):
    callback = ConceptClustering(concepts_file, corpus, tokenizer_file, every=5, shuffles=4)
    trainer = fake_trainer(GenesisTokenizer.from_file(tokenizer_file).vocab_size)
    points = callback.embed(trainer)
    # Each context alone, unpadded, averaged over its word's positions by hand.
    with torch.no_grad():
        for row in range(len(points)):
            ids = callback.input_ids[row, :int(callback.lengths[row])]
            hidden = trainer.model.lm.hidden_states(ids[None])[0]
            expected = hidden[callback.word_mask[row, :len(ids)]].mean(0).numpy()
            np.testing.assert_allclose(points[row], expected, rtol=1e-4, atol=1e-5)

    result = callback.measure(trainer)
    assert set(result) == {"concepts_silhouette", "concepts_silhouette_shuffled", "concepts_seconds"}
    assert all(isinstance(value, float) for value in result.values())
    assert result["concepts_silhouette"] == pytest.approx(reference_silhouette(points, callback.labels), abs=1e-5)
    shuffled = np.mean([reference_silhouette(points, labels) for labels in callback.shuffled_labels])
    assert result["concepts_silhouette_shuffled"] == pytest.approx(shuffled, abs=1e-5)
    assert trainer.model.training  # inference() put train mode back


def test_separated_groups_score_near_one_and_beat_the_shuffles(corpus, concepts_file, tokenizer_file):
    callback = ConceptClustering(concepts_file, corpus, tokenizer_file, every=5)
    # Every occurrence points along its group's axis, with a little noise: perfectly separated clusters.
    rng = np.random.default_rng(1)
    points = np.eye(8, dtype=np.float32)[callback.labels] + 0.01 * rng.standard_normal((len(callback.labels), 8))
    silhouette, shuffled = callback.score(points.astype(np.float32))
    assert silhouette > 0.95
    assert shuffled < 0.5
    assert np.isnan(callback.score(np.full_like(points, np.nan))).all()  # a diverged model: NaN, not an exception


def test_shuffles_move_whole_words_keep_group_sizes_and_are_deterministic(corpus, concepts_file, tokenizer_file):
    make = lambda seed: ConceptClustering(concepts_file, corpus, tokenizer_file, every=5, shuffles=6, seed=seed)
    callback, again, other = make(0), make(0), make(1)
    np.testing.assert_array_equal(callback.shuffled_labels, again.shuffled_labels)
    assert not np.array_equal(callback.shuffled_labels, other.shuffled_labels)
    assert callback.shuffled_labels.shape == (6, len(callback.labels))

    # Rows of one word are consecutive; a word's rows share one label, and the words per group stay as many.
    sizes = sorted(len(words) for words in callback.groups.values())
    for labels in callback.shuffled_labels:
        word_labels = [set(labels[callback.occurrence_word == w]) for w in range(len(callback.words))]
        assert all(len(found) == 1 for found in word_labels)
        assert sorted(np.bincount([found.pop() for found in word_labels])) == sizes

    trainer = fake_trainer(GenesisTokenizer.from_file(tokenizer_file).vocab_size)
    first, second = callback.measure(trainer), again.measure(trainer)
    for key in ("concepts_silhouette", "concepts_silhouette_shuffled"):
        assert first[key] == second[key]


def test_on_step_end_measures_every_n_steps_and_at_the_last(corpus, concepts_file, tokenizer_file):
    callback = ConceptClustering(concepts_file, corpus, tokenizer_file, every=4, shuffles=2)
    trainer = fake_trainer(GenesisTokenizer.from_file(tokenizer_file).vocab_size, steps=10)
    measured = [step for step in range(1, 11) if callback.on_step_end(trainer, step, {}) is not None]
    assert measured == [4, 8, 10]


# ---------------------------------------------------------------------------------------------- the file


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    ("[groups\nlove = 1", "not valid TOML"),
    ('love = ["love", "mercy"]', "no [groups] table"),
    ("groups = 3", "no [groups] table"),
    ("[groups]\n", "no [groups] table"),
    ('[groups]\nlove = "love"', "must be a list"),
    ("[groups]\nlove = [1, 2]", "must be a list"),
    ('[groups]\nlove = ["love", ""]', "must be a list"),
    ('[groups]\na = ["sea", "river"]\nb = ["sea", "gold"]', "in both groups"),
    ('[groups]\nwater = ["sea", "river"]\nmetals = ["tin", "lead"]', "need at least 2"),
    ('[groups]\nnothing = ["Zion", "zeal"]\nnone = ["xyzzy", "plugh"]', "need at least 2"),
])
def test_bad_concept_files_are_one_line_config_errors(tmp_path, corpus, tokenizer_file, content, problem):
    path = tmp_path / "mine.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as error:
        ConceptClustering(path, corpus, tokenizer_file, every=1)
    message = str(error.value)
    assert message.startswith(f"--concepts: {path}: ") and problem in message and "\n" not in message


def test_missing_words_and_thin_groups_are_dropped_with_one_notice(tmp_path, corpus, tokenizer_file, caplog):
    path = tmp_path / "mine.toml"
    path.write_text('[groups]\nwater = ["sea", "river", "ocean"]\nmetals = ["gold", "silver"]\n'
                    'beasts = ["behemoth", "LORD"]\n')
    with caplog.at_level(logging.WARNING, logger="genesis_train.callbacks.concepts"):
        callback = ConceptClustering(path, corpus, tokenizer_file, every=1)
    assert callback.groups == {"water": ["sea", "river"], "metals": ["gold", "silver"]}
    notices = [record.getMessage() for record in caplog.records]
    assert len(notices) == 1
    assert "ocean, behemoth" in notices[0] and "beasts" in notices[0] and str(path) in notices[0]


def test_default_groups_load_from_the_package(tmp_path):
    groups = tomllib.loads(DEFAULT_CONCEPTS_FILE.read_text())["groups"]
    assert len(groups) >= 5 and all(len(words) >= 2 for words in groups.values())
    # A corpus that holds every default word: every default group is kept.
    texts = [f"And there was {word} in the land." for words in groups.values() for word in words]
    corpus = Corpus([translation("T", texts)])
    tokenizer_file = make_tokenizer(tmp_path / "tokenizer.json", texts)
    callback = ConceptClustering(None, corpus, tokenizer_file, every=1, shuffles=2)
    assert callback.path == DEFAULT_CONCEPTS_FILE
    assert callback.groups == groups
    result = callback.measure(fake_trainer(GenesisTokenizer.from_file(tokenizer_file).vocab_size))
    assert -1 <= result["concepts_silhouette"] <= 1
