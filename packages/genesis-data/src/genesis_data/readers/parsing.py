"""What every reader shares: the format error naming file and line, book and verse-key checks, verse cleaning,
line splitting and text decoding."""

from __future__ import annotations

import html
import re
from pathlib import Path

from genesis_data.canon import MAX_NUMBER, book_number, verse_key


class BibleFormatError(ValueError):
    """A file in a known format breaks that format; the message names the file, the line and what was expected."""


def format_error(path: Path, line: int | str, expected: str, found: str) -> BibleFormatError:
    shown = found if len(found) <= 60 else found[:57] + "..."
    return BibleFormatError(f"{path}:{line}: expected {expected}, found {shown!r}")


def resolve_book(name: str, path: Path, line: int | str) -> int:
    number = book_number(name)
    if number is None:
        raise format_error(path, line, "a known book name", name)
    return number


def checked_key(book: int, chapter: int, verse: int, path: Path, line: int | str, found: str) -> int:
    """Verse key, after checking that chapter (1-999) and verse (0-999; some editions number a psalm's
    title 0) fit the key."""
    if not (1 <= chapter <= MAX_NUMBER and 0 <= verse <= MAX_NUMBER):
        raise format_error(path, line, f"chapter 1-{MAX_NUMBER} and verse 0-{MAX_NUMBER}", found)
    return verse_key(book, chapter, verse)


_SPACES = re.compile(r"\s+")
# Unbound Bible metadata glued to the last verse of some files ("#THE UNBOUND BIBLE (www.unboundbible.org) #name ...").
_UNBOUND_TRAILER = re.compile(r"\s*#THE UNBOUND BIBLE\b.*$", re.DOTALL)


def clean_verse(text: str) -> str:
    """Verse text as the model should see it: HTML entities decoded, file metadata cut off, every run of
    whitespace (tabs, U+3000, no-break spaces, literal "\\t" escapes) one space, no space at either end.
    Editorial marks that belong to the edition ({gloss}, [added], ¶) are kept."""
    if "&" in text:
        text = html.unescape(text)
    if "#THE UNBOUND BIBLE" in text:
        text = _UNBOUND_TRAILER.sub("", text)
    if "\\t" in text:
        text = text.replace("\\t", " ")
    return _SPACES.sub(" ", text).strip()


def split_lines(text: str) -> list[str]:
    """Lines ended by LF or CRLF. Unlike ``str.splitlines`` this does not break at the other Unicode line
    boundaries (U+0085, U+2028, form feed, ...), which occur inside verse text and would shift an eBible
    file against its vref.txt."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def decode_text(path: Path, raw: bytes) -> str:
    """UTF-8 with or without a BOM."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise BibleFormatError(f"{path}:{line}: expected UTF-8 text, found undecodable bytes") from None
