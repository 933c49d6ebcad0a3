import hashlib
import logging
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from genesis_data.blocks import held_out_verses
from genesis_data.canon import format_key
from genesis_data.corpus import Corpus
from genesis_data.readers.openbible import read_cross_references
from genesis_data.sampler import DEFAULT_WEIGHTS, TASKS, MultiTaskSampler
from genesis_data.tokenizer import SPECIAL_TOKENS

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAD, BOS, EOS, SEP = (list(SPECIAL_TOKENS).index(role) for role in ("pad", "bos", "eos", "sep"))
BLOCK, BATCH = 256, 6


@pytest.fixture(scope="module")
def builtin_sampler(builtin_corpus, builtin_bpe, cache_dir) -> MultiTaskSampler:
    return MultiTaskSampler(builtin_corpus, builtin_bpe, block_size=BLOCK, batch_size=BATCH, seed=0, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def builtin_references(builtin_corpus, tmp_path_factory) -> Path:
    """OpenBible-style cross references over the built-in corpus, so xref is tested without the shared data:
    every fourth ASV verse points at the verse forty on (mostly in another chapter, so held-out anchors get
    training targets as well as held-out ones) and at the two verses from two on."""
    osis = [format_key(key).replace(" ", ".").replace(":", ".") for key in builtin_corpus["ASV"].keys.tolist()]
    lines = ["From Verse\tTo Verse\tVotes"]
    for i in range(0, len(osis) - 40, 4):
        lines += [f"{osis[i]}\t{osis[i + 40]}\t3", f"{osis[i]}\t{osis[i + 2]}-{osis[i + 3]}\t1"]
    path = tmp_path_factory.mktemp("references") / "cross_references.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _builtin_xref_sampler(builtin_corpus, builtin_bpe, builtin_references, cache_dir, seed=0) -> MultiTaskSampler:
    return MultiTaskSampler(builtin_corpus, builtin_bpe, block_size=BLOCK, batch_size=BATCH, seed=seed,
                            cross_references=builtin_references, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def builtin_xref_sampler(builtin_corpus, builtin_bpe, builtin_references, cache_dir) -> MultiTaskSampler:
    return _builtin_xref_sampler(builtin_corpus, builtin_bpe, builtin_references, cache_dir)


@pytest.fixture(scope="module")
def xref_sampler(small_corpus, small_bpe, bible_dir, cache_dir) -> MultiTaskSampler:
    return MultiTaskSampler(small_corpus, small_bpe, block_size=BLOCK, batch_size=BATCH, seed=0,
                            cross_references=bible_dir / "cross_references.txt", cache_dir=cache_dir)


class VerseIndex:
    """Which (translation, verse key) a token sequence is, found by content, independently of the sampler."""

    def __init__(self, sampler: MultiTaskSampler, corpus: Corpus):
        self.corpus, self.data = corpus, sampler.tokenized
        self.by_tokens = defaultdict(set)
        for verse, key in enumerate(self.data.keys.tolist()):
            translation = self.data.translation_of(verse)
            self.by_tokens[tuple(self.data.verse_tokens(verse).tolist())].add((translation, key))
        self.held_out_chapters = set(
            (self.data.keys[held_out_verses(corpus, self.data.keys, 0.02)] // 1000).tolist()
        )

    def verses(self, tokens, held_out: bool | None = None) -> set[tuple[int, int]]:
        """The (translation, key) verses with these tokens; with ``held_out``, only those in held-out chapters
        (True) or only those in training chapters (False)."""
        found = self.by_tokens[tuple(tokens)]
        if held_out is None:
            return found
        return {(t, k) for t, k in found if (k // 1000 in self.held_out_chapters) == held_out}

    def range_tokens(self, translation: int, first: int, last: int) -> list[int]:
        """Tokens of the translation's verses with keys from ``first`` to ``last``, in key order."""
        start, stop = self.data.translation_starts[translation : translation + 2]
        keys = self.data.keys[start:stop]
        inside = np.flatnonzero((keys >= first) & (keys <= last))
        return [t for verse in inside[np.argsort(keys[inside])] for t in self.data.verse_tokens(int(start + verse)).tolist()]


def _unframe(ids: torch.Tensor, mask: torch.Tensor) -> list[int]:
    real = ids[mask].tolist()
    assert real[0] == BOS and real[-1] == EOS
    assert not mask[len(real):].any() and (ids[len(real):] == PAD).all()
    return real[1:-1]


def _draw(sampler: MultiTaskSampler, task: str, batches: int = 10) -> list[dict]:
    return [getattr(sampler, f"_{task}_batch")() for _ in range(batches)]


def test_builtin_corpus_without_cross_references_turns_xref_off(builtin_corpus, builtin_bpe, cache_dir, caplog):
    with caplog.at_level(logging.WARNING):
        sampler = MultiTaskSampler(builtin_corpus, builtin_bpe, block_size=BLOCK, batch_size=2, cache_dir=cache_dir)
    assert sampler.tasks == ["lm", "coherence", "paraphrase"]
    assert "task xref is off: no cross references given" in caplog.text
    assert sum(sampler.weights.values()) == pytest.approx(1.0)
    assert sampler.weights["lm"] == pytest.approx(0.70 / 0.925)


def test_lm_batches(builtin_sampler):
    for batch in _draw(builtin_sampler, "lm"):
        assert set(batch) == {"task", "input_ids", "labels"} and batch["task"] == "lm"
        assert batch["input_ids"].shape == batch["labels"].shape == (BATCH, BLOCK)
        assert batch["input_ids"].dtype == batch["labels"].dtype == torch.int64
        assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])


def test_train_and_validation_streams_partition_the_tokens(builtin_sampler, builtin_corpus):
    data = builtin_sampler.tokenized
    assert len(builtin_sampler.train_stream) + len(builtin_sampler.val_stream) == len(data.tokens) + 2 * len(builtin_corpus)


def _assert_coherence_pairs(batches: list[dict], index: VerseIndex, held_out: bool) -> None:
    """Pairs are consecutive exactly when labelled 1, else the second is a verse of the first's translation;
    both verses are from held-out chapters or both from training chapters, as ``held_out`` says."""
    labels = []
    for batch in batches:
        assert set(batch) == {"task", "input_ids", "attention_mask", "labels"} and batch["task"] == "coherence"
        assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[1] <= BLOCK
        assert batch["labels"].dtype == torch.int64 and abs(batch["labels"].sum().item() - BATCH / 2) <= 0.5
        for ids, mask, label in zip(batch["input_ids"], batch["attention_mask"], batch["labels"].tolist()):
            content = _unframe(ids, mask)
            assert content.count(SEP) == 1
            a, b = content[: content.index(SEP)], content[content.index(SEP) + 1 :]
            if len(a) + len(b) + 3 == BLOCK:
                continue  # truncated: no longer a whole verse to look up
            # Repeated verse texts ("And Jehovah spake unto Moses, saying,") match several keys; some of them
            # must be of the split and explain the pair.
            a_verses, b_verses = index.verses(a, held_out), index.verses(b, held_out)
            assert a_verses and b_verses
            consecutive = any((t, k + 1) in b_verses for t, k in a_verses)
            assert consecutive == bool(label)
            assert {t for t, _ in a_verses} & {t for t, _ in b_verses}
            labels.append(label)
    assert len(labels) > 0.65 * BATCH * len(batches)


def test_coherence_pairs_are_consecutive_exactly_when_labelled_1(builtin_sampler, builtin_corpus):
    _assert_coherence_pairs(_draw(builtin_sampler, "coherence", 20), VerseIndex(builtin_sampler, builtin_corpus), False)


def _assert_paraphrase_pairs(batches: list[dict], index: VerseIndex, held_out: bool) -> None:
    """Each pair is one verse, of the split ``held_out`` says, in two translations."""
    for batch in batches:
        assert set(batch) == {"task", "a_ids", "a_mask", "b_ids", "b_mask"} and batch["task"] == "paraphrase"
        for a_ids, a_mask, b_ids, b_mask in zip(batch["a_ids"], batch["a_mask"], batch["b_ids"], batch["b_mask"]):
            a, b = _unframe(a_ids, a_mask), _unframe(b_ids, b_mask)
            if len(a) == BLOCK - 2 or len(b) == BLOCK - 2:
                continue
            pairs = {(ta, tb) for ta, ka in index.verses(a, held_out) for tb, kb in index.verses(b, held_out)
                     if ka == kb and ta != tb}
            assert pairs


def test_paraphrase_pairs_are_one_verse_in_two_translations(builtin_sampler, builtin_corpus):
    _assert_paraphrase_pairs(_draw(builtin_sampler, "paraphrase"), VerseIndex(builtin_sampler, builtin_corpus), False)


def _assert_xref_triplets_follow_the_references(
    batches: list[dict], index: VerseIndex, references_path: Path, held_out: bool = False
) -> None:
    """Each anchor's positive is a range it cross-references, its negative another verse of its translation;
    anchor and negative are of the split ``held_out`` says (the positive may be of either in validation)."""
    references = read_cross_references(references_path)
    targets = defaultdict(list)
    for source, first, last, votes in zip(references.source.tolist(), references.target_first.tolist(),
                                          references.target_last.tolist(), references.votes.tolist()):
        if votes >= 1:
            targets[source].append((first, last))
    checked = 0
    for batch in batches:
        assert set(batch) == {"task"} | {f"{part}_{kind}" for part in ("anchor", "positive", "negative")
                                         for kind in ("ids", "mask")} and batch["task"] == "xref"
        for row in range(BATCH):
            anchor, positive, negative = (_unframe(batch[f"{p}_ids"][row], batch[f"{p}_mask"][row])
                                          for p in ("anchor", "positive", "negative"))
            if BLOCK - 2 in (len(anchor), len(positive)):
                continue
            # The same text can stand at several verses (refrains, translations that agree): any of them may be
            # the anchor, and the positive must be a target of one of them in the same translation.
            anchors = index.verses(anchor, held_out)
            expected = [index.range_tokens(translation, first, last)
                        for translation, key in anchors for first, last in targets[key]]
            # A range longer than MAX_XREF_VERSES verses is cut, so the positive may be a prefix of it.
            assert any(candidate[: len(positive)] == positive for candidate in expected)
            translations = {t for t, _ in anchors}
            assert any(t in translations for t, _ in index.verses(negative, held_out)) and negative != anchor
            checked += 1
    assert checked > 0.5 * BATCH * len(batches)


def test_all_four_tasks_on_the_shared_translations(xref_sampler, small_corpus, bible_dir):
    assert xref_sampler.tasks == list(TASKS)
    index = VerseIndex(xref_sampler, small_corpus)
    _assert_xref_triplets_follow_the_references(_draw(xref_sampler, "xref"), index, bible_dir / "cross_references.txt")
    for batch in _draw(xref_sampler, "paraphrase"):
        for a_ids, a_mask, b_ids, b_mask in zip(batch["a_ids"], batch["a_mask"], batch["b_ids"], batch["b_mask"]):
            (ta, _), *_ = index.verses(_unframe(a_ids, a_mask))
            (tb, _), *_ = index.verses(_unframe(b_ids, b_mask))
            # The four small translations are in four languages, so the pair is always bilingual.
            assert small_corpus.translations[ta].language != small_corpus.translations[tb].language


def test_validation_on_the_shared_translations(xref_sampler, small_corpus, bible_dir):
    languages = {"BeaMRK": "bea", "ManxGaelic": "gv", "JapDenmo": "ja", "Tyndale": "en"}
    assert xref_sampler.translation_languages == languages
    assert xref_sampler.validation_tasks == list(TASKS)
    index = VerseIndex(xref_sampler, small_corpus)
    _assert_xref_triplets_follow_the_references(xref_sampler.validation_batches(10, "xref"), index,
                                                bible_dir / "cross_references.txt", held_out=True)
    _assert_coherence_pairs(xref_sampler.validation_batches(20, "coherence"), index, held_out=True)
    _assert_paraphrase_pairs(xref_sampler.validation_batches(10, "paraphrase"), index, held_out=True)


def test_all_four_tasks_on_the_builtin_corpus_with_cross_references(builtin_corpus, builtin_bpe, bible_dir, cache_dir):
    # The built-in translations use the KJV numbering that OpenBible's references are written in.
    sampler = MultiTaskSampler(builtin_corpus, builtin_bpe, block_size=BLOCK, batch_size=BATCH, seed=0,
                               cross_references=bible_dir / "cross_references.txt", cache_dir=cache_dir)
    assert sampler.tasks == list(TASKS)
    drawn = Counter(next(sampler)["task"] for _ in range(400))
    assert set(drawn) == set(TASKS)
    index = VerseIndex(sampler, builtin_corpus)
    _assert_xref_triplets_follow_the_references(_draw(sampler, "xref"), index, bible_dir / "cross_references.txt")


def test_tasks_are_drawn_by_their_weights(builtin_corpus, builtin_bpe, cache_dir):
    weights = {"lm": 0.5, "coherence": 0.3, "paraphrase": 0.2}
    sampler = MultiTaskSampler(builtin_corpus, builtin_bpe, block_size=8, batch_size=1, weights=weights, cache_dir=cache_dir)
    draws = 3000
    counts = Counter(next(sampler)["task"] for _ in range(draws))
    for task, weight in weights.items():
        sigma = (draws * weight * (1 - weight)) ** 0.5
        assert abs(counts[task] - draws * weight) < 4 * sigma


def _same(batch_a: dict, batch_b: dict) -> bool:
    return batch_a.keys() == batch_b.keys() and all(
        torch.equal(batch_a[k], batch_b[k]) if isinstance(batch_a[k], torch.Tensor) else batch_a[k] == batch_b[k]
        for k in batch_a
    )


def test_same_seed_same_stream_and_resume_continues_it(builtin_corpus, builtin_bpe, cache_dir):
    def make(seed=0):
        return MultiTaskSampler(builtin_corpus, builtin_bpe, block_size=BLOCK, batch_size=BATCH, seed=seed, cache_dir=cache_dir)

    first, second = make(), make()
    head = [next(first) for _ in range(7)]
    assert all(_same(a, next(second)) for a in head)
    state = first.state_dict()
    tail = [next(first) for _ in range(12)]
    resumed = make()
    resumed.load_state_dict(state)
    assert all(_same(a, next(resumed)) for a in tail)
    other_seed = make(seed=1)
    assert not all(_same(a, next(other_seed)) for a in head)


def test_state_from_other_settings_is_refused(builtin_corpus, builtin_bpe, cache_dir, builtin_sampler):
    other = MultiTaskSampler(builtin_corpus, builtin_bpe, block_size=BLOCK, batch_size=BATCH + 1, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="different corpus, tokenizer or sampler settings"):
        other.load_state_dict(builtin_sampler.state_dict())


def test_validation_batches_are_deterministic_and_held_out(builtin_sampler):
    before = builtin_sampler.validation_batches(3)
    next(builtin_sampler)
    after = builtin_sampler.validation_batches(3)
    assert len(before) == 3 and all(_same(a, b) for a, b in zip(before, after))
    val = builtin_sampler.val_stream.tolist()
    val_text = ",".join(map(str, val))
    for batch in before:
        assert batch["task"] == "lm" and batch["input_ids"].shape == (BATCH, BLOCK)
        for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
            assert ",".join(map(str, ids + labels[-1:])) in val_text
    assert all(_same(a, b) for a, b in zip(before, builtin_sampler.validation_batches(3, "lm")))


def _digest(batches: list[dict]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for batch in batches:
        for key in sorted(batch):
            value = batch[key]
            digest.update(key.encode())
            digest.update(f"{tuple(value.shape)}{value.dtype}".encode() + value.numpy().tobytes()
                          if isinstance(value, torch.Tensor) else value.encode())
    return digest.hexdigest()


# The first 40 batches of the seed-0 builtin_xref_sampler, recorded with the sampler before training and
# validation batches shared their builders: a seed's training stream must not move. (A new tokenizers or
# numpy that changes BPE training or the Generator's draws moves it too; then record it again.)
TRAINING_STREAM_DIGEST = "2d5ae93619cf807eae412091910b3fb8"


def test_training_stream_of_a_seed_is_unchanged(builtin_corpus, builtin_bpe, builtin_references, cache_dir):
    sampler = _builtin_xref_sampler(builtin_corpus, builtin_bpe, builtin_references, cache_dir)
    batches = [next(sampler) for _ in range(40)]
    assert {batch["task"] for batch in batches} == set(TASKS)
    assert _digest(batches) == TRAINING_STREAM_DIGEST


def test_validation_tasks_are_the_enabled_tasks_with_held_out_examples(builtin_sampler, builtin_xref_sampler):
    assert builtin_sampler.validation_tasks == ["lm", "coherence", "paraphrase"]
    assert builtin_xref_sampler.validation_tasks == list(TASKS)


def test_validation_batches_have_the_training_format(builtin_xref_sampler):
    for task in TASKS:
        training = _draw(builtin_xref_sampler, task, 1)[0]
        for batch in builtin_xref_sampler.validation_batches(4, task):
            assert batch.keys() == training.keys() and batch["task"] == task
            for key, value in training.items():
                if isinstance(value, torch.Tensor):
                    assert batch[key].dtype == value.dtype and batch[key].dim() == value.dim()
                    assert len(batch[key]) == BATCH and batch[key].shape[-1] <= BLOCK
    assert builtin_xref_sampler.validation_batches(3, "lm")[0]["input_ids"].shape == (BATCH, BLOCK)


def test_validation_batches_use_held_out_verses(builtin_xref_sampler, builtin_corpus, builtin_references):
    sampler = builtin_xref_sampler
    index = VerseIndex(sampler, builtin_corpus)
    _assert_coherence_pairs(sampler.validation_batches(20, "coherence"), index, held_out=True)
    _assert_paraphrase_pairs(sampler.validation_batches(10, "paraphrase"), index, held_out=True)
    xref = sampler.validation_batches(10, "xref")
    _assert_xref_triplets_follow_the_references(xref, index, builtin_references, held_out=True)
    # The anchors' targets need not be held out: here many are single verses of training chapters.
    positives = [_unframe(ids, mask) for b in xref for ids, mask in zip(b["positive_ids"], b["positive_mask"])]
    assert any(index.verses(positive, False) and not index.verses(positive, True) for positive in positives)


def test_validation_is_fixed_and_leaves_the_training_stream_alone(
    builtin_corpus, builtin_bpe, builtin_references, cache_dir
):
    plain, evaluated = (_builtin_xref_sampler(builtin_corpus, builtin_bpe, builtin_references, cache_dir, seed=3)
                        for _ in range(2))
    first = {task: evaluated.validation_batches(3, task) for task in TASKS}
    for step in range(40):
        assert _same(next(plain), next(evaluated))
        if step % 10 == 0:
            again = {task: evaluated.validation_batches(3, task) for task in TASKS}
            assert all(_same(a, b) for task in TASKS for a, b in zip(first[task], again[task]))
    # Runs with other seeds validate on the same batches.
    other_seed = _builtin_xref_sampler(builtin_corpus, builtin_bpe, builtin_references, cache_dir, seed=4)
    for task in TASKS:
        assert all(_same(a, b) for a, b in zip(first[task], other_seed.validation_batches(3, task)))


def _two_mini_translations(folder: Path) -> Corpus:
    folder.mkdir()
    (folder / "A.txt").write_bytes((FIXTURES / "formats" / "Mini.txt").read_bytes())
    (folder / "B.json").write_bytes((FIXTURES / "formats" / "Mini.json").read_bytes())
    return Corpus.from_bible_dir(folder, cache_dir=folder.parent)


def test_enabled_task_without_held_out_examples_is_a_clear_error(builtin_bpe, tmp_path, caplog):
    corpus = _two_mini_translations(tmp_path / "bible")
    (tmp_path / "xref.txt").write_text("From Verse\tTo Verse\tVotes\nGen.1.1\tExod.6.3-Exod.6.4\t5\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        sampler = MultiTaskSampler(corpus, builtin_bpe, block_size=BLOCK, batch_size=2, cache_dir=tmp_path,
                                   cross_references=tmp_path / "xref.txt")
    # The one held-out chapter is 3 John 1, two verses: a pair with no third verse to contrast, and no anchor.
    assert held_out_verses(corpus, sampler.tokenized.keys, 0.02).sum() == 4
    assert sampler.tasks == list(TASKS)
    assert sampler.validation_tasks == ["lm", "paraphrase"]
    assert "task coherence has no validation batches" in caplog.text
    for task in ("coherence", "xref"):
        with pytest.raises(ValueError, match=f"task {task} has no validation batches: no .* validation verse"):
            sampler.validation_batches(1, task)
    with pytest.raises(ValueError, match="unknown task translation"):
        sampler.validation_batches(1, "translation")
    assert len(sampler.validation_batches(2, "paraphrase")) == 2


@pytest.mark.parametrize("n", [1, 10, 100_000])
def test_parallel_verses_are_the_same_held_out_verse_in_both(builtin_sampler, builtin_corpus, n):
    data = builtin_sampler.tokenized
    held_out = held_out_verses(builtin_corpus, data.keys, 0.02)
    # {held-out key: its tokens} of each translation, from the corpus order of verses.
    a_tokens, b_tokens = (
        {int(data.keys[verse]): data.verse_tokens(verse).tolist() for verse in range(start, stop) if held_out[verse]}
        for start, stop in (data.translation_starts[t : t + 2] for t in map(builtin_corpus.names.index, ("ASV", "WEB")))
    )
    shared = sorted(a_tokens.keys() & b_tokens.keys())
    a_ids, a_mask, b_ids, b_mask = builtin_sampler.parallel_verses("ASV", "WEB", n)
    assert len(a_ids) == len(b_ids) == min(n, len(shared))
    assert a_ids.shape == a_mask.shape and b_ids.shape == b_mask.shape
    # Row i of both is one verse, the verses rising through the shared held-out keys in even steps from the first.
    positions = [-1]
    for row in range(len(a_ids)):
        a, b = _unframe(a_ids[row], a_mask[row]), _unframe(b_ids[row], b_mask[row])
        positions.append(next(position for position in range(positions[-1] + 1, len(shared))
                              if a_tokens[shared[position]] == a and b_tokens[shared[position]] == b))
    assert positions[1] == 0
    steps = set(np.diff(positions[1:]).tolist())
    assert steps <= {len(shared) // len(a_ids), -(-len(shared) // len(a_ids))}


def test_parallel_verses_errors(builtin_sampler, builtin_bpe, tmp_path):
    assert builtin_sampler.translation_languages == {"ASV": "en", "KJV": "en", "WEB": "en"}
    with pytest.raises(ValueError, match="no translation NIV in the corpus; it has ASV, KJV, WEB"):
        builtin_sampler.parallel_verses("ASV", "NIV", 4)
    corpus = _two_mini_translations(tmp_path / "bible")
    sampler = MultiTaskSampler(corpus, builtin_bpe, block_size=BLOCK, cache_dir=tmp_path, val_fraction=0.0)
    with pytest.raises(ValueError, match="translations A and B share no held-out verse"):
        sampler.parallel_verses("A", "B", 4)


def test_running_text_enables_lm_only(tmp_path, cache_dir, caplog):
    path = tmp_path / "running.txt"
    path.write_text("\n".join(f"Line {i} of the running text, Jehovah be praised." for i in range(400)), encoding="utf-8")
    corpus = Corpus.from_text_file(path)
    from genesis_data.tokenizer import load_or_train_tokenizer

    tokenizer = load_or_train_tokenizer(corpus, "char", 300, cache_dir)
    with caplog.at_level(logging.WARNING):
        sampler = MultiTaskSampler(corpus, tokenizer, block_size=32, batch_size=2, cache_dir=cache_dir)
    assert sampler.tasks == ["lm"]
    assert "task paraphrase is off" in caplog.text and "task coherence is off" in caplog.text
    assert next(sampler)["task"] == "lm"
    assert len(sampler.validation_batches(1)) == 1


def test_single_translation_has_no_paraphrase(builtin_bpe, tmp_path, caplog):
    mini = Corpus.from_bible_dir(FIXTURES / "formats", cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        sampler = MultiTaskSampler(Corpus([mini["Mini"]]), builtin_bpe, block_size=BLOCK, cache_dir=tmp_path)
    assert sampler.tasks == ["lm", "coherence"]
    assert "task paraphrase is off: it needs two verse-aligned translations" in caplog.text


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"lm": 1.0, "translation": 0.5}, "unknown task translation"),
        ({"lm": -1.0}, "lm must not be negative"),
        ({"xref": 1.0}, "no task can be sampled"),
    ],
)
def test_bad_weights_are_clear_errors(builtin_corpus, builtin_bpe, cache_dir, weights, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskSampler(builtin_corpus, builtin_bpe, block_size=BLOCK, weights=weights, cache_dir=cache_dir)


def test_default_weights():
    assert DEFAULT_WEIGHTS == {"lm": 0.70, "coherence": 0.15, "xref": 0.075, "paraphrase": 0.075}


def test_translation_without_text_is_harmless(builtin_bpe, tmp_path):
    folder = tmp_path / "bible"
    folder.mkdir()
    (folder / "A.txt").write_bytes((FIXTURES / "formats" / "Mini.txt").read_bytes())
    (folder / "B.json").write_bytes((FIXTURES / "formats" / "Mini.json").read_bytes())
    (folder / "Empty.txt").write_text("### Genesis\n\n[1:1] \n[1:2]  \n", encoding="utf-8")
    (tmp_path / "xref.txt").write_text("From Verse\tTo Verse\tVotes\nGen.1.1\tExod.6.3-Exod.6.4\t5\n", encoding="utf-8")
    corpus = Corpus.from_bible_dir(folder, cache_dir=tmp_path)
    assert len(corpus["Empty"]) == 0
    sampler = MultiTaskSampler(corpus, builtin_bpe, block_size=BLOCK, batch_size=4, cache_dir=tmp_path,
                               cross_references=tmp_path / "xref.txt", val_fraction=0.0)
    assert sampler.tasks == ["lm", "coherence", "xref", "paraphrase"]
    for task in sampler.tasks:
        assert getattr(sampler, f"_{task}_batch")()["task"] == task


def test_no_validation_text_is_a_clear_error(builtin_bpe, tmp_path):
    mini = Corpus.from_bible_dir(FIXTURES / "formats", cache_dir=tmp_path)
    sampler = MultiTaskSampler(mini, builtin_bpe, block_size=BLOCK, cache_dir=tmp_path, val_fraction=0.0)
    assert len(sampler.val_stream) == 1  # the end-of-text token alone
    with pytest.raises(ValueError, match="no validation text"):
        sampler.validation_batches(1)
