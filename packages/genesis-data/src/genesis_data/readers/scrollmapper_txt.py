"""scrollmapper/bible_databases text format: ``### Book`` headers, then ``[chapter:verse] text`` lines.

Every verse position of the file's numbering scheme is written, including empty ones (``[c:v] `` with a
trailing space). A merged range ``[c:v-w] text`` (not in the scrollmapper files, but written by other tools)
is read as verse v.
"""

from __future__ import annotations

import re
from pathlib import Path

from genesis_data.readers.parsing import checked_key, clean_verse, format_error, resolve_book, split_lines

FORMAT = "scrollmapper-txt"

_VERSE_LINE = re.compile(r"\[(\d+):(\d+)(?:-\d+)?\](?: (.*)|)$", re.DOTALL)
_EXPECTED = "'### <Book>', '[<chapter>:<verse>] <text>' or an empty line"


def detect(path: Path, text: str) -> bool:
    first = next((line for line in split_lines(text[:4096]) if line.strip()), "")
    return first.startswith("### ") or _VERSE_LINE.match(first) is not None


def parse(path: Path, text: str) -> tuple[list[int], list[str]]:
    keys: list[int] = []
    texts: list[str] = []
    seen: set[int] = set()
    book = None
    for line_number, line in enumerate(split_lines(text), start=1):
        if line.startswith("["):
            match = _VERSE_LINE.match(line)
            if match is None:
                raise format_error(path, line_number, _EXPECTED, line)
            if book is None:
                raise format_error(path, line_number, "a '### <Book>' header before the first verse", line)
            key = checked_key(book, int(match.group(1)), int(match.group(2)), path, line_number, line)
            if key in seen:
                raise format_error(path, line_number, "each verse once per book", line)
            seen.add(key)
            verse = clean_verse(match.group(3) or "")
            if verse:
                keys.append(key)
                texts.append(verse)
        elif line.startswith("### "):
            book = resolve_book(line[4:].strip(), path, line_number)
        elif line.strip():
            raise format_error(path, line_number, _EXPECTED, line)
    return keys, texts
