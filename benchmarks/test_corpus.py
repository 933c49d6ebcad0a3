"""Reading a translation directory (../shared/bible/translations: 39 files, ~96 MB, five numbering schemes) with
`Corpus.from_bible_dir`: "cold" parses every file into an empty parse cache; "cached" reads the directory again
with that cache warm (a hash and a load per file)."""

import shutil

import pytest
from genesis_data.corpus import Corpus

from benchmarks.workloads import BIBLE_DIR

TRANSLATIONS = BIBLE_DIR / "translations"


@pytest.fixture(scope="module")
def translation_bytes():
    if not TRANSLATIONS.is_dir():
        pytest.skip(f"no Bible directory at {TRANSLATIONS}")
    return sum(path.stat().st_size for path in TRANSLATIONS.iterdir() if path.is_file())


@pytest.mark.parametrize("impl", ["genesis-cold", "genesis-cached"])
def test_read_bible_dir(benchmark, impl, translation_bytes, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("parse-cache")

    def empty_cache():
        shutil.rmtree(cache_dir)
        cache_dir.mkdir()

    cold = impl == "genesis-cold"
    corpus = Corpus.from_bible_dir(TRANSLATIONS, cache_dir=cache_dir)  # fills the cache for "cached"
    benchmark.group = "read_bible_dir"
    benchmark.extra_info.update(impl=impl, translations=len(corpus), bytes=translation_bytes,
                                verses=sum(len(translation) for translation in corpus.translations))
    benchmark.pedantic(Corpus.from_bible_dir, args=(TRANSLATIONS,), kwargs={"cache_dir": cache_dir},
                       setup=empty_cache if cold else None, rounds=2 if cold else 3)
