"""Readers for Bible text files: one module per format, one entry point, :func:`read_bible_file`.

A reader returns the verses that have text, as parallel lists of canonical verse keys (see
:mod:`genesis_data.canon`) and cleaned verse texts, in file order. Blank and whitespace-only verses are
dropped, so ``len(keys)`` is the file's "verses with text".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genesis_data.readers import ebible, scrollmapper_csv, scrollmapper_json, scrollmapper_txt
from genesis_data.readers.parsing import BibleFormatError, clean_verse, decode_text

__all__ = ["READER_VERSION", "BibleFormatError", "ParsedBible", "clean_verse", "decode_text", "read_bible_file"]

# Bump when parsing or cleaning changes, so cached parses are rebuilt.
READER_VERSION = "2"


@dataclass
class ParsedBible:
    format: str
    keys: list[int]
    texts: list[str]


def read_bible_file(path: Path, raw: bytes | None = None) -> ParsedBible | None:
    """Parse one translation file; None when its format is unknown (the caller warns and skips it)."""
    path = Path(path)
    text = decode_text(path, path.read_bytes() if raw is None else raw)
    for reader in (scrollmapper_txt, scrollmapper_csv, scrollmapper_json, ebible):
        if reader.detect(path, text):
            keys, texts = reader.parse(path, text)
            return ParsedBible(reader.FORMAT, keys, texts)
    return None
