"""ModularArithmetic against expectations computed here, independently of the module: answers from Python's
integer arithmetic (division through Fermat's little theorem), pairs from itertools, token ids from the
tokenizer file as genesis-model reads it."""

import itertools
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from genesis_model import GenesisTokenizer

from genesis_data.algorithmic import ModularArithmetic

P = 97
SMALL = {"modulus": 11, "train_fraction": 0.5, "batch_size": 7}  # 60 training equations: epochs end mid-batch


# c for (a, b, p) by operation; division multiplies by b^(p-2), b's inverse mod a prime p (Fermat).
EXPECTED = {
    "+": lambda a, b, p: (a + b) % p,
    "-": lambda a, b, p: (a - b) % p,
    "*": lambda a, b, p: a * b % p,
    "/": lambda a, b, p: a * pow(b, p - 2, p) % p,
}


def all_pairs(p: int, operation: str) -> set[tuple[int, int]]:
    return {(a, b) for a, b in itertools.product(range(p), repeat=2) if operation != "/" or b != 0}


def rows(batches: list[dict]) -> list[tuple[int, int]]:
    """The (a, b) of every row of the batches, in order."""
    return [(int(ids[1]), int(ids[3])) for batch in batches for ids in batch["input_ids"]]


def draw(source: ModularArithmetic, count: int) -> list[dict]:
    return [next(source) for _ in range(count)]


def assert_same_batches(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for x, y in zip(first, second):
        assert x["task"] == y["task"] == "lm"
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])


@pytest.mark.parametrize("operation", ["+", "-", "*", "/"])
def test_every_label_is_the_operation_mod_p(operation):
    source = ModularArithmetic(P, operation, batch_size=1000)
    bos, eq = source.bos_id, source.equals_id
    batches = source.train_batches() + source.validation_batches(1) + draw(source, 3)
    checked = 0
    for batch in batches:
        assert batch["input_ids"].dtype == batch["labels"].dtype == torch.int64
        assert batch["input_ids"].shape == batch["labels"].shape == (len(batch["input_ids"]), 5)
        for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
            _, a, op, b, _ = ids
            assert ids == [bos, a, source.operation_id, b, eq]
            assert labels == [-100, -100, -100, -100, EXPECTED[operation](a, b, P)]
            checked += 1
    assert checked == len(all_pairs(P, operation)) + 3 * 1000


@pytest.mark.parametrize("operation", ["+", "/"])
def test_train_and_validation_partition_all_pairs(operation):
    source = ModularArithmetic(P, operation)
    train, validation = rows(source.train_batches()), rows(source.validation_batches(1))
    assert len(set(train)) == len(train) and len(set(validation)) == len(validation)
    assert not set(train) & set(validation)
    assert set(train) | set(validation) == all_pairs(P, operation)
    assert train == sorted(train) and validation == sorted(validation)  # equation order
    assert train == [tuple(pair) for pair in source.train_pairs.tolist()]
    assert validation == [tuple(pair) for pair in source.validation_pairs.tolist()]


def test_split_depends_on_split_seed_only():
    base = ModularArithmetic(P, split_seed=3)
    same = ModularArithmetic(P, split_seed=3, seed=9, batch_size=64)
    other = ModularArithmetic(P, split_seed=4)
    assert np.array_equal(base.train_pairs, same.train_pairs)
    assert np.array_equal(base.validation_pairs, same.validation_pairs)
    assert not np.array_equal(base.train_pairs, other.train_pairs)
    # A shuffle, not a slice: the split is spread over all a and b.
    assert set(base.train_pairs[:, 0].tolist()) == set(range(P))


@pytest.mark.parametrize(("operation", "fraction"), [("+", 0.3), ("-", 0.5), ("*", 0.05), ("/", 0.9)])
def test_train_fraction_gives_the_counts(operation, fraction):
    source = ModularArithmetic(P, operation, train_fraction=fraction)
    total = P * P if operation != "/" else P * (P - 1)
    assert len(source.train_pairs) == round(fraction * total)
    assert len(source.validation_pairs) == total - round(fraction * total)


def test_describe():
    assert ModularArithmetic(P).describe() == "a + b mod 97: 2,823 train / 6,586 validation equations (30%)"
    assert ModularArithmetic(P, "/", 0.5).describe() == "a / b mod 97: 4,656 train / 4,656 validation equations (50%)"


def test_attributes_the_trainer_reads():
    source = ModularArithmetic(P, batch_size=128)
    assert source.tasks == ["lm"] and source.validation_tasks == ["lm"] and source.weights == {"lm": 1.0}
    assert source.block_size == 5 and source.batch_size == 128
    assert source.vocab_size == 111  # 97 numbers, + - * /, =, 5 special tokens and 4 reserved ids
    assert iter(source) is source
    batch = next(source)
    assert batch["input_ids"].shape == (128, 5)


def test_batches_are_determined_by_the_seed():
    assert_same_batches(draw(ModularArithmetic(P, seed=5, batch_size=100), 40),
                        draw(ModularArithmetic(P, seed=5, batch_size=100), 40))
    first = next(ModularArithmetic(P, seed=5, batch_size=100))
    assert not torch.equal(first["input_ids"], next(ModularArithmetic(P, seed=6, batch_size=100))["input_ids"])


def test_epochs_cover_every_train_pair_once_and_reshuffle():
    source = ModularArithmetic(**SMALL)
    train = [tuple(pair) for pair in source.train_pairs.tolist()]
    epochs = 5
    stream = rows(draw(source, epochs * len(train) // SMALL["batch_size"] + 1))  # every batch of 7 is whole
    assert all(len(batch["input_ids"]) == 7 for batch in draw(source, 20))
    orders = [stream[i * len(train) : (i + 1) * len(train)] for i in range(epochs)]
    for order in orders:
        assert sorted(order) == train
    assert len({tuple(order) for order in orders}) == epochs


def test_full_batch_is_the_whole_train_set_every_step():
    source = ModularArithmetic(P, train_fraction=0.3, batch_size=10_000)
    n_train = round(0.3 * P * P)
    assert source.batch_size == n_train
    batches = draw(source, 3)
    assert rows(batches[:1]) == [tuple(pair) for pair in source.train_pairs.tolist()]
    assert_same_batches(batches, [batches[0]] * 3)
    assert_same_batches(batches[:1], source.train_batches())
    # Exactly the training set's size is full-batch too.
    assert_same_batches(draw(ModularArithmetic(P, batch_size=n_train), 2), batches[:2])


def test_validation_covers_every_held_out_pair_once():
    source = ModularArithmetic(P, batch_size=500)
    batches = source.validation_batches(1)
    assert [len(batch["input_ids"]) for batch in batches] == [500] * 13 + [86]
    counts = Counter(rows(batches))
    assert set(counts.values()) == {1}
    assert set(counts) == {tuple(pair) for pair in source.validation_pairs.tolist()}
    assert_same_batches(batches, source.validation_batches(50))  # n is ignored: always all of them
    before = next(ModularArithmetic(P, batch_size=500))
    assert_same_batches([next(source)], [before])  # validation batches leave the training stream alone
    with pytest.raises(ValueError, match="only the lm task"):
        source.validation_batches(1, task="coherence")


@pytest.mark.parametrize("stop", [0, 1, 8, 17, 60])  # 60 batches of 7 = 7 epochs of 60: a state at an epoch's end
def test_resume_yields_the_uninterrupted_batches(stop, tmp_path):
    uninterrupted = draw(ModularArithmetic(**SMALL, seed=2), stop + 25)
    first = ModularArithmetic(**SMALL, seed=2)
    draw(first, stop)
    # Through a file the way the trainer keeps it: torch.save, then a weights-only load.
    torch.save({"sampler": first.state_dict()}, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)["sampler"]
    resumed = ModularArithmetic(**SMALL, seed=99)  # the state replaces the seed's stream
    draw(resumed, 3)
    resumed.load_state_dict(state)
    assert_same_batches(draw(resumed, 25), uninterrupted[stop:])


@pytest.mark.parametrize(
    "change",
    [{"modulus": 13}, {"operation": "*"}, {"train_fraction": 0.6}, {"split_seed": 1}, {"batch_size": 8}],
)
def test_state_from_other_settings_is_refused(change):
    state = ModularArithmetic(**SMALL).state_dict()
    with pytest.raises(ValueError, match="different algorithmic-task settings"):
        ModularArithmetic(**{**SMALL, **change}).load_state_dict(state)


def test_state_of_another_sampler_is_refused():
    source = ModularArithmetic(**SMALL)
    with pytest.raises(ValueError, match="different algorithmic-task settings"):
        source.load_state_dict({"rng": source.rng.bit_generator.state, "config": "0" * 32})


def test_tokenizer_round_trip_through_genesis_model(tmp_path):
    source = ModularArithmetic(P, "+")
    path = source.write_tokenizer(tmp_path / "nested" / "tokenizer.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json"]  # no temporary file left
    tokenizer = GenesisTokenizer.from_file(path)
    assert tokenizer.vocab_size == source.vocab_size
    assert None not in (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.sep_id)
    raw = tokenizer.tokenizer
    assert [raw.token_to_id(str(value)) for value in range(P)] == list(range(P))  # a number's id is its value
    plus, equals = raw.token_to_id("+"), raw.token_to_id("=")
    assert (plus, equals) == (source.operation_id, source.equals_id)

    assert tokenizer.encode("12 + 7 =", add_bos=False) == [12, plus, 7, equals]
    assert tokenizer.encode("12+7=", add_bos=False) == [12, plus, 7, equals]
    # A prompt is exactly the training context of its equation, and the answer decodes after it.
    batch = source.train_batches()[0]
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    a, b = ids[1], ids[3]
    assert tokenizer.encode(f"{a} + {b} =") == ids
    assert tokenizer.decode([*ids, labels[-1]]) == f"{a} + {b} = {(a + b) % P}"
    assert tokenizer.decode(tokenizer.encode("96 + 0 = 96")) == "96 + 0 = 96"
    assert tokenizer.stream(ids).push(labels[-1]) == f" {(a + b) % P}"  # as genesis-generate shows an answer
    for operation in "+-*/":
        symbol = raw.token_to_id(operation)
        assert tokenizer.encode(f"3 {operation} 4 =", add_bos=False) == [3, symbol, 4, equals]
        assert tokenizer.decode([3, symbol, 4, equals]) == f"3 {operation} 4 ="


def test_tokenizer_path_is_written_once_and_shared_by_a_modulus(tmp_path):
    source = ModularArithmetic(P, "+")
    path = source.tokenizer_path(tmp_path)
    assert path.name == "tokenizer.json" and path.parent.parent == tmp_path / "algorithmic"
    path.write_text(path.read_text())  # a second write would change this mtime
    marked = path.stat().st_mtime_ns
    assert ModularArithmetic(P, "/", 0.5, split_seed=3).tokenizer_path(tmp_path) == path
    assert path.stat().st_mtime_ns == marked
    assert ModularArithmetic(13).tokenizer_path(tmp_path) != path


def test_a_new_process_finds_the_same_tokenizer_without_genesis_model(tmp_path):
    """The cache path must not change between runs (it is a hash of the file's content), and genesis-data
    must not import genesis-model or genesis-train."""
    code = (
        "import sys; from genesis_data.algorithmic import ModularArithmetic; "
        f"print(ModularArithmetic({P}).tokenizer_path(sys.argv[1])); "
        "print(sorted(m for m in sys.modules if m.startswith('genesis_')))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True, text=True)
    path, loaded = result.stdout.splitlines()
    assert path == str(ModularArithmetic(P).tokenizer_path(tmp_path))
    assert "genesis_model" not in loaded and "genesis_train" not in loaded


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"modulus": 1}, "--modulus"),
        ({"modulus": 0}, "--modulus"),
        ({"modulus": 96, "operation": "/"}, "--modulus"),
        ({"modulus": 1001, "operation": "/"}, "--modulus"),  # 7 * 11 * 13
        ({"operation": "%"}, "--operation"),
        ({"operation": "add"}, "--operation"),
        ({"train_fraction": 0.0}, "--train-fraction"),
        ({"train_fraction": 1.0}, "--train-fraction"),
        ({"train_fraction": -0.2}, "--train-fraction"),
        ({"train_fraction": float("nan")}, "--train-fraction"),
        ({"modulus": 5, "train_fraction": 0.01}, "--train-fraction"),  # round(0.25) = 0 training equations
        ({"modulus": 5, "train_fraction": 0.99}, "--train-fraction"),  # all 25 in training
        ({"batch_size": 0}, "--batch-size"),
    ],
)
def test_bad_arguments_name_the_option(options, option):
    with pytest.raises(ValueError, match=f"^{option} "):
        ModularArithmetic(**options)


def test_other_operations_work_with_a_composite_modulus():
    assert len(ModularArithmetic(96, "*").train_pairs) == round(0.3 * 96 * 96)
    assert len(ModularArithmetic(2, "-", 0.5).validation_pairs) == 2
