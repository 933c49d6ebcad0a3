"""Translations and the corpus of them that every task samples from.

Three ways in, one result:

* ``Corpus.builtin()``: the public-domain ASV, KJV and WEB from the ``pythonbible`` packages, offline.
* ``Corpus.from_bible_dir(path)``: every translation file in a folder, format detected per file; parses are
  cached by file content, so a second read of a large folder costs a hash and a load.
* ``Corpus.from_text_file(path)``: one translation as running text, for the LM task only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from genesis_data import canon
from genesis_data.progress import track
from genesis_data.readers import READER_VERSION, ParsedBible, ebible, plain_text, read_bible_file
from genesis_data.readers.ebible import VREF_NAME

log = logging.getLogger(__name__)

UNKNOWN_LANGUAGE = "und"

# Languages (BCP 47) of the translations in scrollmapper/bible_databases that we know of, by file name.
KNOWN_LANGUAGES: dict[str, str] = {
    "Anderson": "en", "BSB": "en", "JPS": "en", "Noyes": "en", "OEB": "en", "OEBcth": "en", "Twenty": "en",
    "Tyndale": "en", "KJV": "en", "ASV": "en", "WEB": "en", "BeaMRK": "bea", "Che1860": "chr",
    "ChiSB": "zh-Hant", "ChiUn": "zh-Hant", "CroSaric": "hr", "CzeBKR": "cs", "DaOT1871NT1907": "da",
    "Esperanto": "eo", "Est": "et", "FreGeneve1669": "fr", "FreOltramare1874": "fr", "FreSynodale1921": "fr",
    "GerAlbrecht": "de", "GerOffBiSt": "de", "GerTafel": "de", "HebModern": "he", "JapDenmo": "ja",
    "ManxGaelic": "gv", "Norsk": "nb", "Peshitta": "syr", "PohnOld": "pon", "PorBLivre": "pt",
    "PorBLivreTR": "pt", "RusMakarij": "ru", "SloStritar": "sl", "SpaRV1865": "es", "StatResGNT": "grc",
    "SweKarlXII": "sv", "SweKarlXII1873": "sv", "Wulfila": "got", "vlsJoNT": "vls",
}

BUILTIN_VERSIONS = ("AMERICAN_STANDARD", "KING_JAMES", "WORLD_ENGLISH")
BUILTIN_NAMES = {"AMERICAN_STANDARD": "ASV", "KING_JAMES": "KJV", "WORLD_ENGLISH": "WEB"}

# Files in a Bible folder that are known not to be translations; skipped without a warning.
_NOT_TRANSLATIONS = {VREF_NAME, "cross_references.txt", "README.md", "SHA256SUMS"}


def default_cache_dir() -> Path:
    return Path(os.environ.get("GENESIS_CACHE_DIR", Path.home() / ".cache" / "genesis"))


@dataclass
class Translation:
    """One translation's verses with text, in file order.

    ``keys`` are canonical verse keys (``genesis_data.canon``); for unaligned running text they are line
    numbers and ``aligned`` is False.
    """

    name: str
    language: str
    format: str
    keys: np.ndarray  # int64, one per verse
    texts: list[str]
    fingerprint: str  # changes whenever the source text or its parsing changes
    aligned: bool = True

    def __post_init__(self) -> None:
        self.keys = np.asarray(self.keys, dtype=np.int64)
        if len(self.keys) != len(self.texts):
            raise ValueError(f"{self.name}: {len(self.keys)} keys for {len(self.texts)} texts")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def books(self) -> list[str]:
        """OSIS ids of the books that have text, in canonical order."""
        if not self.aligned:
            return []
        return [canon.BOOKS[number - 1].osis for number in np.unique(self.keys // 1_000_000)]


@dataclass
class Corpus:
    translations: list[Translation]
    source: Path | None = None  # the folder or file it was read from; None for the built-in corpus
    skipped: list[Path] = field(default_factory=list)  # files in no known format

    def __post_init__(self) -> None:
        if not self.translations:
            where, hint = "", ""
            if self.source is not None:
                where = f" in {self.source}"
                subfolders = sorted(p.name for p in self.source.iterdir() if p.is_dir()) if self.source.is_dir() else []
                if subfolders:
                    hint = f" (it has the subfolders {', '.join(subfolders)}; point --bible-dir at the one with the files)"
            raise ValueError(f"no Bible translations found{where}; expected .txt/.csv/.json files in a known format{hint}")

    def __len__(self) -> int:
        return len(self.translations)

    def __getitem__(self, name: str) -> Translation:
        for translation in self.translations:
            if translation.name == name:
                return translation
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.translations]

    @cached_property
    def fingerprint(self) -> str:
        """Hash of every translation's content; keys the tokenizer and token caches."""
        digest = hashlib.blake2b(READER_VERSION.encode(), digest_size=16)
        for translation in self.translations:
            digest.update(f"{translation.name}\0{translation.language}\0{translation.fingerprint}\0".encode())
        return digest.hexdigest()

    def iter_texts(self):
        for translation in self.translations:
            yield from translation.texts

    # ------------------------------------------------------------------ constructors

    @classmethod
    def builtin(cls, cache_dir: str | Path | None = None) -> Corpus:
        """ASV, KJV and WEB from the pythonbible packages (English, 31,102 verse positions each); the parse
        is cached, so later processes neither import the large text modules nor clean 93,000 verses again."""
        parse_cache = Path(cache_dir or default_cache_dir()) / "parsed"
        pythonbible_version = f"pythonbible-{_distribution_version('pythonbible')}"
        translations = []
        for version_name in BUILTIN_VERSIONS:
            package = f"pythonbible-{BUILTIN_NAMES[version_name].lower()}"
            fingerprint = f"{package}-{_distribution_version(package)}-{pythonbible_version}-reader{READER_VERSION}"
            parsed = _load_parse(parse_cache, fingerprint)
            if parsed is None:
                parsed = _read_pythonbible(version_name)
                _save_parse(parse_cache, fingerprint, parsed)
            translations.append(
                Translation(
                    name=BUILTIN_NAMES[version_name],
                    language="en",
                    format=parsed.format,
                    keys=parsed.keys,
                    texts=parsed.texts,
                    fingerprint=fingerprint,
                )
            )
        return cls(translations)

    @classmethod
    def from_bible_dir(cls, path: str | Path, cache_dir: str | Path | None = None) -> Corpus:
        """Every translation file directly in ``path``; files in no known format are skipped with a warning.

        Translation names are file names without the extension; when two files share a name (``ChiUn.txt``
        and ``ChiUn.csv``) the first in sorted order is kept.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"--bible-dir {folder}: not a directory")
        parse_cache = Path(cache_dir or default_cache_dir()) / "parsed"
        translations: dict[str, Translation] = {}
        skipped: list[Path] = []
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        for file in track(files, f"reading {folder}", unit="files"):
            if file.name in _NOT_TRANSLATIONS:
                continue
            if file.stem in translations:
                log.info("%s: skipped, translation %s was already read", file, file.stem)
                continue
            raw = file.read_bytes()
            fingerprint = _file_fingerprint(file, raw)
            parsed = _load_parse(parse_cache, fingerprint)
            if parsed is None:
                parsed = read_bible_file(file, raw)
                if parsed is None:
                    log.warning("%s: skipped, not in a known Bible format", file)
                    skipped.append(file)
                    continue
                _save_parse(parse_cache, fingerprint, parsed)
            translations[file.stem] = Translation(
                name=file.stem,
                language=_language(file.stem, parsed.format),
                format=parsed.format,
                keys=parsed.keys,
                texts=parsed.texts,
                fingerprint=fingerprint,
            )
        return cls(list(translations.values()), source=folder, skipped=skipped)

    @classmethod
    def from_text_file(cls, path: str | Path) -> Corpus:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such file")
        raw = file.read_bytes()
        keys, texts = plain_text.parse(file, raw)
        if not texts:
            raise ValueError(f"{file}: contains no text")
        translation = Translation(
            name=file.stem,
            language=KNOWN_LANGUAGES.get(file.stem, UNKNOWN_LANGUAGE),
            format=plain_text.FORMAT,
            keys=keys,
            texts=texts,
            fingerprint=hashlib.blake2b(raw, digest_size=16).hexdigest(),
            aligned=False,
        )
        return cls([translation], source=file)


_PYTHONBIBLE_VERSE_NUMBER = re.compile(r"^\d+\.\s*")


def _read_pythonbible(version_name: str) -> ParsedBible:
    import pythonbible
    from pythonbible.bible import get_bible

    bible = get_bible(pythonbible.Version[version_name], "plain_text")
    keys, texts = [], []
    for verse_id in bible.get_verse_ids():
        # Plain text starts each verse with its number ("1. In the beginning"); the WEB writes apostrophes
        # as backticks.
        text = _PYTHONBIBLE_VERSE_NUMBER.sub("", bible.get_scripture(verse_id)).replace("`", "'")
        text = " ".join(text.split())
        if text:
            # pythonbible ids are book * 1e6 + chapter * 1e3 + verse, like ours, with its own book numbers.
            book = pythonbible.Book(verse_id // 1_000_000)
            keys.append(canon.book_number(book.name) * 1_000_000 + verse_id % 1_000_000)
            texts.append(text)
    return ParsedBible("pythonbible", keys, texts)


def _language(name: str, format_name: str) -> str:
    """From the table of known files; eBible files are named "<ISO 639-3>-<id>" (eng-engkjv), so their
    prefix is the language."""
    if name in KNOWN_LANGUAGES:
        return KNOWN_LANGUAGES[name]
    prefix = name.split("-", 1)[0]
    if format_name == ebible.FORMAT and re.fullmatch(r"[a-z]{3}", prefix):
        return prefix
    return UNKNOWN_LANGUAGE


def _distribution_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _file_fingerprint(file: Path, raw: bytes) -> str:
    digest = hashlib.blake2b(raw, digest_size=16)
    digest.update(READER_VERSION.encode())
    vref = file.parent / VREF_NAME
    if vref.is_file():  # an eBible file's verses depend on its vref.txt
        digest.update(vref.read_bytes())
    return digest.hexdigest()


def _load_parse(cache: Path, fingerprint: str) -> ParsedBible | None:
    path = cache / f"{fingerprint}.npz"
    if not path.is_file():
        return None
    with np.load(path) as stored:
        texts = stored["texts"].tobytes().decode("utf-8")
        return ParsedBible(str(stored["format"]), stored["keys"].tolist(), texts.split("\n") if texts else [])


def _save_parse(cache: Path, fingerprint: str, parsed: ParsedBible) -> None:
    # Cleaned verses never contain a newline, so one joined string holds them all.
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{fingerprint}.{os.getpid()}.tmp.npz"
    np.savez(
        tmp,
        format=np.array(parsed.format),
        keys=np.asarray(parsed.keys, dtype=np.int64),
        texts=np.frombuffer("\n".join(parsed.texts).encode("utf-8"), dtype=np.uint8),
    )
    os.replace(tmp, cache / f"{fingerprint}.npz")
