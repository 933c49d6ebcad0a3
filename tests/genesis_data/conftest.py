"""Shared fixtures for the genesis-data tests.

The real translations live outside the repository, in ``<repo>/../shared/bible`` (override with
``GENESIS_BIBLE_DIR``); tests that need them skip when the folder is absent. Everything expensive (reading
all of it, training a tokenizer) happens once per session, with small vocabularies.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from genesis_data.corpus import Corpus
from genesis_data.tokenizer import load_or_train_tokenizer

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_BIBLE = Path(os.environ.get("GENESIS_BIBLE_DIR", REPO.parent / "shared" / "bible"))

# Small translations of several languages and scripts that share Gospel verses: enough for every task.
SMALL_TRANSLATIONS = ("BeaMRK", "ManxGaelic", "JapDenmo", "Tyndale")


@pytest.fixture(scope="session")
def bible_dir() -> Path:
    if not (SHARED_BIBLE / "translations").is_dir():
        pytest.skip(f"no Bible data at {SHARED_BIBLE} (set GENESIS_BIBLE_DIR)")
    return SHARED_BIBLE


@pytest.fixture(scope="session")
def readme_verse_counts(bible_dir) -> dict[str, int]:
    """The "Verses with text" column of the data README's translation table."""
    readme = (bible_dir / "README.md").read_text(encoding="utf-8")
    rows = re.finditer(r"^\| (\S+)\.txt \|.*\| ([\d,]+) \| [^|]+ \| [\d.]+ \|$", readme, re.MULTILINE)
    return {row.group(1): int(row.group(2).replace(",", "")) for row in rows}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("genesis-cache")


@pytest.fixture(scope="session")
def shared_corpus(bible_dir, cache_dir) -> Corpus:
    return Corpus.from_bible_dir(bible_dir / "translations", cache_dir=cache_dir)


@pytest.fixture(scope="session")
def small_corpus(shared_corpus) -> Corpus:
    return Corpus([shared_corpus[name] for name in SMALL_TRANSLATIONS])


@pytest.fixture(scope="session")
def builtin_corpus(cache_dir) -> Corpus:
    return Corpus.builtin(cache_dir=cache_dir)


@pytest.fixture(scope="session")
def builtin_bpe(builtin_corpus, cache_dir) -> Path:
    return load_or_train_tokenizer(builtin_corpus, "bpe", 512, cache_dir)


@pytest.fixture(scope="session")
def small_bpe(small_corpus, cache_dir) -> Path:
    return load_or_train_tokenizer(small_corpus, "bpe", 512, cache_dir)
