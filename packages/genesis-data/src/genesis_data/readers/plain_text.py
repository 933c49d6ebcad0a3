"""A plain running-text file: one translation with no verse references, read for the LM task only.

Each non-blank line is one unit; units are numbered by line so the validation split can hold out whole
stretches of text (see ``genesis_data.blocks``).
"""

from __future__ import annotations

from pathlib import Path

from genesis_data.readers.parsing import clean_verse, decode_text, split_lines

FORMAT = "plain-text"


def parse(path: Path, raw: bytes) -> tuple[list[int], list[str]]:
    keys: list[int] = []
    texts: list[str] = []
    for line_number, line in enumerate(split_lines(decode_text(path, raw)), start=1):
        unit = clean_verse(line)
        if unit:
            keys.append(line_number)
            texts.append(unit)
    return keys, texts
