"""scrollmapper/bible_databases JSON:
``{"translation": ..., "books": [{"name", "chapters": [{"chapter", "verses": [{"verse", "text"}]}]}]}``.

JSON has no lines once parsed, so structural errors name the place by its JSON path
(``books[2].chapters[0].verses[5]``); syntax errors name the line.
"""

from __future__ import annotations

import json
from pathlib import Path

from genesis_data.readers.parsing import BibleFormatError, checked_key, clean_verse, format_error, resolve_book

FORMAT = "scrollmapper-json"


def detect(path: Path, text: str) -> bool:
    return path.suffix.lower() == ".json" and text.lstrip().startswith("{") and '"books"' in text


def _field(container: object, name: str, kind: type, path: Path, where: str):
    value = container.get(name) if isinstance(container, dict) else None
    # bool is an int subclass; a verse number of true is still wrong.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise format_error(path, where, f"{kind.__name__} field {name!r}", json.dumps(container)[:60])
    return value


def parse(path: Path, text: str) -> tuple[list[int], list[str]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise BibleFormatError(f"{path}:{error.lineno}: expected JSON, found a syntax error ({error.msg})") from None
    keys: list[int] = []
    texts: list[str] = []
    seen: set[int] = set()
    for b, book_entry in enumerate(_field(document, "books", list, path, "top level")):
        where = f"books[{b}]"
        book = resolve_book(_field(book_entry, "name", str, path, where), path, where)
        for c, chapter_entry in enumerate(_field(book_entry, "chapters", list, path, where)):
            where = f"books[{b}].chapters[{c}]"
            chapter = _field(chapter_entry, "chapter", int, path, where)
            for v, verse_entry in enumerate(_field(chapter_entry, "verses", list, path, where)):
                where = f"books[{b}].chapters[{c}].verses[{v}]"
                number = _field(verse_entry, "verse", int, path, where)
                key = checked_key(book, chapter, number, path, where, json.dumps(verse_entry)[:60])
                if key in seen:
                    raise format_error(path, where, "each verse once", json.dumps(verse_entry)[:60])
                seen.add(key)
                verse = clean_verse(_field(verse_entry, "text", str, path, where))
                if verse:
                    keys.append(key)
                    texts.append(verse)
    return keys, texts
