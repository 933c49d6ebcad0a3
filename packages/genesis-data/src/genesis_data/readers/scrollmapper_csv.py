"""scrollmapper/bible_databases CSV: a ``Book,Chapter,Verse,Text`` header, then one RFC 4180 row per verse."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from genesis_data.readers.parsing import checked_key, clean_verse, format_error, resolve_book

FORMAT = "scrollmapper-csv"

HEADER = ["Book", "Chapter", "Verse", "Text"]


def detect(path: Path, text: str) -> bool:
    first_line = text.split("\n", 1)[0].rstrip("\r")
    return first_line.replace('"', "").replace(" ", "") == ",".join(HEADER)


def parse(path: Path, text: str) -> tuple[list[int], list[str]]:
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    keys: list[int] = []
    texts: list[str] = []
    seen: set[int] = set()
    books: dict[str, int] = {}
    try:
        next(rows)  # header, checked by detect()
        for row in rows:
            if not row:
                continue
            line = rows.line_num
            if len(row) != 4 or not row[1].isdigit() or not row[2].isdigit():
                raise format_error(path, line, "'<Book>,<chapter>,<verse>,<text>'", ",".join(row))
            book = books.get(row[0])
            if book is None:
                book = books[row[0]] = resolve_book(row[0], path, line)
            key = checked_key(book, int(row[1]), int(row[2]), path, line, ",".join(row))
            if key in seen:
                raise format_error(path, line, "each verse once", ",".join(row))
            seen.add(key)
            verse = clean_verse(row[3])
            if verse:
                keys.append(key)
                texts.append(verse)
    except csv.Error as error:
        raise format_error(path, rows.line_num, "an RFC 4180 CSV row", str(error)) from None
    return keys, texts
