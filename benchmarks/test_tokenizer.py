"""Tokenizer encode throughput over one whole translation (KJV, ~1M tokens): genesis-data's `encode_verses`, the
call that builds the token cache, with the BPE tokenizer trained on the built-in corpus. Target: >= 1M tokens/s."""

import pytest
from genesis_data.tokenizer import encode_verses
from tokenizers import Tokenizer

from benchmarks.workloads import VOCAB_SIZE


@pytest.mark.parametrize("impl", ["genesis"])
def test_tokenizer_encode(benchmark, impl, builtin_corpus, bpe_tokenizer_path):
    tokenizer = Tokenizer.from_file(str(bpe_tokenizer_path))
    texts = builtin_corpus["KJV"].texts
    tokens, _ = encode_verses(tokenizer, texts)
    benchmark.group = "tokenizer_encode"
    benchmark.extra_info.update(impl=impl, translation="KJV", verses=len(texts), tokens=len(tokens),
                                bytes=sum(len(text.encode()) for text in texts), vocab_size=VOCAB_SIZE)
    benchmark.pedantic(encode_verses, args=(tokenizer, texts), rounds=3, warmup_rounds=1)
