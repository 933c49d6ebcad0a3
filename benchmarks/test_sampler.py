"""Multi-task sampler throughput from one process: batches of tiny's training shape (8 x 256) drawn with the
default task weights from the built-in corpus (plus the OpenBible cross references where ../shared/bible has
them). Target: >= 1M tokens/s, counting the real (unpadded) tokens of every batch."""

import pytest
from genesis_data.sampler import MultiTaskSampler

from benchmarks.workloads import BIBLE_DIR, TRAIN_SHAPES

BATCHES_PER_CALL = 200


def real_tokens(batch: dict) -> int:
    """Tokens that are not padding: the masks of pair/triplet tasks, every position of an LM block."""
    masks = [value for key, value in batch.items() if key.endswith("mask")]
    if masks:
        return sum(int(mask.sum()) for mask in masks)
    return batch["input_ids"].numel()


@pytest.mark.parametrize("impl", ["genesis"])
def test_sampler(benchmark, impl, builtin_corpus, bpe_tokenizer_path, data_cache_dir):
    shape = TRAIN_SHAPES["tiny"]
    cross_references = BIBLE_DIR / "cross_references.txt"
    sampler = MultiTaskSampler(
        builtin_corpus, bpe_tokenizer_path, block_size=shape.seq_len, batch_size=shape.batch_size, seed=0,
        cross_references=cross_references if cross_references.is_file() else None, cache_dir=data_cache_dir,
    )
    start = sampler.state_dict()

    def rewind():
        sampler.load_state_dict(start)

    def draw():
        return [next(sampler) for _ in range(BATCHES_PER_CALL)]

    # Every timed call rewinds first, so each draws these same batches.
    rewind()
    batches = draw()
    benchmark.group = "sampler"
    benchmark.extra_info.update(
        impl=impl, tasks=sampler.tasks, batches=BATCHES_PER_CALL, samples=BATCHES_PER_CALL * shape.batch_size,
        tokens=sum(real_tokens(batch) for batch in batches),
    )
    benchmark.pedantic(draw, setup=rewind, rounds=5, warmup_rounds=1)
