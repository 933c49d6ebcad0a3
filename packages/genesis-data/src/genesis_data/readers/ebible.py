"""eBible corpus format (BibleNLP/ebible): one verse per line, aligned line by line with a ``vref.txt`` of
references such as ``GEN 1:1`` that sits in the same folder.

An empty line is a verse the translation lacks; ``<range>`` marks a verse whose text was merged into the
line before it, so it is read as empty too.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from genesis_data.readers.parsing import checked_key, clean_verse, decode_text, format_error, resolve_book, split_lines

FORMAT = "ebible"

VREF_NAME = "vref.txt"
_VREF_LINE = re.compile(r"([0-9A-Z]{3}) (\d+):(\d+)$")
_MERGED_INTO_PREVIOUS = "<range>"


def detect(path: Path, text: str) -> bool:
    return path.name != VREF_NAME and path.suffix.lower() == ".txt" and (path.parent / VREF_NAME).is_file()


@functools.lru_cache(maxsize=4)
def read_vref(vref_path: Path) -> tuple[int, ...]:
    keys = []
    for line_number, line in enumerate(split_lines(decode_text(vref_path, vref_path.read_bytes())), start=1):
        match = _VREF_LINE.match(line.strip())
        if match is None:
            raise format_error(vref_path, line_number, "a reference such as 'GEN 1:1'", line)
        book = resolve_book(match.group(1), vref_path, line_number)
        keys.append(checked_key(book, int(match.group(2)), int(match.group(3)), vref_path, line_number, line))
    return tuple(keys)


def parse(path: Path, text: str) -> tuple[list[int], list[str]]:
    vref = read_vref(path.parent / VREF_NAME)
    lines = split_lines(text)
    if len(lines) > len(vref):
        raise format_error(path, len(vref) + 1, f"at most {len(vref)} lines, one per line of {VREF_NAME}", lines[len(vref)])
    keys: list[int] = []
    texts: list[str] = []
    for key, line in zip(vref, lines):
        verse = clean_verse(line)
        if verse and verse != _MERGED_INTO_PREVIOUS:
            keys.append(key)
            texts.append(verse)
    return keys, texts
