"""Canonical book ids and verse keys.

Every reader maps its book names onto one id per book, the OSIS abbreviation ("Gen", "1Sam", "Rev"), so that
the same verse lines up across translations, file formats and the OpenBible cross references (which use OSIS).
A verse is one integer, ``book_number * 1_000_000 + chapter * 1_000 + verse``, where ``book_number`` is the
book's 1-based position in ``BOOKS``: keys sort in canonical order and a chapter is ``key // 1_000``.

Versification is not mapped: a file's ``[c:v]`` is taken as that verse, so translations that number verses
differently (JPS's Masoretic numbering, the Catholic-scheme files) misalign in those places.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Book:
    osis: str  # canonical id
    usfm: str  # eBible / Paratext code
    name: str  # English name as written in the scrollmapper files
    aliases: tuple[str, ...] = ()  # other spellings: pythonbible enum names, common English names


# Protestant order, then the deuterocanonical and Septuagint books. Append only: a book's position is part
# of every verse key, and keys are cached on disk.
BOOKS: tuple[Book, ...] = (
    Book("Gen", "GEN", "Genesis"),
    Book("Exod", "EXO", "Exodus"),
    Book("Lev", "LEV", "Leviticus"),
    Book("Num", "NUM", "Numbers"),
    Book("Deut", "DEU", "Deuteronomy"),
    Book("Josh", "JOS", "Joshua"),
    Book("Judg", "JDG", "Judges"),
    Book("Ruth", "RUT", "Ruth"),
    Book("1Sam", "1SA", "I Samuel", ("SAMUEL_1",)),
    Book("2Sam", "2SA", "II Samuel", ("SAMUEL_2",)),
    Book("1Kgs", "1KI", "I Kings", ("KINGS_1",)),
    Book("2Kgs", "2KI", "II Kings", ("KINGS_2",)),
    Book("1Chr", "1CH", "I Chronicles", ("CHRONICLES_1",)),
    Book("2Chr", "2CH", "II Chronicles", ("CHRONICLES_2",)),
    Book("Ezra", "EZR", "Ezra"),
    Book("Neh", "NEH", "Nehemiah"),
    Book("Esth", "EST", "Esther"),
    Book("Job", "JOB", "Job"),
    Book("Ps", "PSA", "Psalms", ("Psalm",)),
    Book("Prov", "PRO", "Proverbs"),
    Book("Eccl", "ECC", "Ecclesiastes", ("Qoheleth",)),
    Book("Song", "SNG", "Song of Solomon", ("SONG_OF_SONGS", "Song of Songs", "Canticles")),
    Book("Isa", "ISA", "Isaiah"),
    Book("Jer", "JER", "Jeremiah"),
    Book("Lam", "LAM", "Lamentations"),
    Book("Ezek", "EZK", "Ezekiel"),
    Book("Dan", "DAN", "Daniel"),
    Book("Hos", "HOS", "Hosea"),
    Book("Joel", "JOL", "Joel"),
    Book("Amos", "AMO", "Amos"),
    Book("Obad", "OBA", "Obadiah"),
    Book("Jonah", "JON", "Jonah"),
    Book("Mic", "MIC", "Micah"),
    Book("Nah", "NAM", "Nahum"),
    Book("Hab", "HAB", "Habakkuk"),
    Book("Zeph", "ZEP", "Zephaniah"),
    Book("Hag", "HAG", "Haggai"),
    Book("Zech", "ZEC", "Zechariah"),
    Book("Mal", "MAL", "Malachi"),
    Book("Matt", "MAT", "Matthew"),
    Book("Mark", "MRK", "Mark"),
    Book("Luke", "LUK", "Luke"),
    Book("John", "JHN", "John"),
    Book("Acts", "ACT", "Acts"),
    Book("Rom", "ROM", "Romans"),
    Book("1Cor", "1CO", "I Corinthians", ("CORINTHIANS_1",)),
    Book("2Cor", "2CO", "II Corinthians", ("CORINTHIANS_2",)),
    Book("Gal", "GAL", "Galatians"),
    Book("Eph", "EPH", "Ephesians"),
    Book("Phil", "PHP", "Philippians"),
    Book("Col", "COL", "Colossians"),
    Book("1Thess", "1TH", "I Thessalonians", ("THESSALONIANS_1",)),
    Book("2Thess", "2TH", "II Thessalonians", ("THESSALONIANS_2",)),
    Book("1Tim", "1TI", "I Timothy", ("TIMOTHY_1",)),
    Book("2Tim", "2TI", "II Timothy", ("TIMOTHY_2",)),
    Book("Titus", "TIT", "Titus"),
    Book("Phlm", "PHM", "Philemon"),
    Book("Heb", "HEB", "Hebrews"),
    Book("Jas", "JAS", "James"),
    Book("1Pet", "1PE", "I Peter", ("PETER_1",)),
    Book("2Pet", "2PE", "II Peter", ("PETER_2",)),
    Book("1John", "1JN", "I John", ("JOHN_1",)),
    Book("2John", "2JN", "II John", ("JOHN_2",)),
    Book("3John", "3JN", "III John", ("JOHN_3",)),
    Book("Jude", "JUD", "Jude"),
    Book("Rev", "REV", "Revelation of John", ("Revelation", "Apocalypse")),
    Book("Tob", "TOB", "Tobit"),
    Book("Jdt", "JDT", "Judith"),
    Book("AddEsth", "ESG", "Additions to Esther", ("Esther (Greek)",)),
    Book("Wis", "WIS", "Wisdom", ("WISDOM_OF_SOLOMON", "Wisdom of Solomon")),
    Book("Sir", "SIR", "Sirach", ("ECCLESIASTICUS",)),
    Book("Bar", "BAR", "Baruch"),
    Book("EpJer", "LJE", "Epistle of Jeremiah", ("Letter of Jeremiah",)),
    Book("PrAzar", "S3Y", "Prayer of Azariah", ("Song of the Three Young Men",)),
    Book("Sus", "SUS", "Susanna"),
    Book("Bel", "BEL", "Bel and the Dragon"),
    Book("1Macc", "1MA", "I Maccabees", ("MACCABEES_1",)),
    Book("2Macc", "2MA", "II Maccabees", ("MACCABEES_2",)),
    Book("3Macc", "3MA", "III Maccabees"),
    Book("4Macc", "4MA", "IV Maccabees"),
    Book("1Esd", "1ES", "I Esdras", ("ESDRAS_1",)),
    Book("2Esd", "2ES", "II Esdras"),
    Book("PrMan", "MAN", "Prayer of Manasses", ("Prayer of Manasseh",)),
    Book("PssSol", "PSS", "Psalms of Solomon"),
    Book("Odes", "ODA", "Odes"),
    Book("1En", "ENO", "I Enoch", ("Enoch",)),
    Book("Ps151", "PS2", "Psalm 151"),
    Book("DanGr", "DAG", "Daniel (Greek)"),
    Book("EpLao", "LAO", "Laodiceans"),
    # Further USFM books that the eBible corpus's vref.txt lists (mostly without text in any translation).
    Book("JoshA", "JSA", "Joshua (A)"),
    Book("JudgB", "JDB", "Judges (B)"),
    Book("TobS", "TBS", "Tobit (S)"),
    Book("SusTh", "SST", "Susanna (Theodotion)"),
    Book("DanTh", "DNT", "Daniel (Theodotion)"),
    Book("BelTh", "BLT", "Bel and the Dragon (Theodotion)"),
    Book("ApEzra", "EZA", "Apocalypse of Ezra"),
    Book("5Ezra", "5EZ", "V Ezra"),
    Book("6Ezra", "6EZ", "VI Ezra"),
    Book("AddPs", "PS3", "Psalms 152-155"),
    Book("2Bar", "2BA", "II Baruch"),
    Book("EpBar", "LBA", "Letter of Baruch"),
    Book("Jub", "JUB", "Jubilees"),
    Book("1Meq", "1MQ", "I Meqabyan"),
    Book("2Meq", "2MQ", "II Meqabyan"),
    Book("3Meq", "3MQ", "III Meqabyan"),
    Book("Reproof", "REP", "Reproof"),
    Book("4Bar", "4BA", "IV Baruch", ("Paralipomena of Jeremiah",)),
)

_ROMAN_PREFIX = re.compile(r"^(iv|iii|ii|i)\s+")
_ROMAN_VALUE = {"i": "1", "ii": "2", "iii": "3", "iv": "4"}


def _lookup_form(name: str) -> str:
    """Case-, space- and punctuation-free form in which "I Samuel", "1 Samuel", "1Sam" and "SAMUEL_1" compare."""
    form = _ROMAN_PREFIX.sub(lambda m: _ROMAN_VALUE[m.group(1)], name.strip().lower())
    form = re.sub(r"[\s._\-()]", "", form)
    # pythonbible writes the number last (SAMUEL_1); move it to the front.
    if (trailing := re.fullmatch(r"([a-z]+)([1-4])", form)) is not None:
        form = trailing.group(2) + trailing.group(1)
    return form


def _build_index() -> dict[str, int]:
    index: dict[str, int] = {}
    for number, book in enumerate(BOOKS, start=1):
        for spelling in (book.osis, book.usfm, book.name, *book.aliases):
            form = _lookup_form(spelling)
            if index.setdefault(form, number) != number:
                raise AssertionError(f"book spelling {spelling!r} is ambiguous")
    return index


_BOOK_NUMBER = _build_index()


@functools.lru_cache(maxsize=4096)  # readers look up the same few names hundreds of thousands of times
def book_number(name: str) -> int | None:
    """1-based position in ``BOOKS`` of a book named in any known spelling (English, OSIS, USFM,
    pythonbible), or None when the name is unknown."""
    return _BOOK_NUMBER.get(_lookup_form(name))


MAX_NUMBER = 999  # chapters and verses must fit their three digits of the key


def verse_key(book: int, chapter: int, verse: int) -> int:
    return book * 1_000_000 + chapter * 1_000 + verse


def split_key(key: int) -> tuple[int, int, int]:
    return key // 1_000_000, key // 1_000 % 1_000, key % 1_000


def format_key(key: int) -> str:
    """Human-readable reference, e.g. ``Gen 1:1``."""
    book, chapter, verse = split_key(key)
    return f"{BOOKS[book - 1].osis} {chapter}:{verse}"


_OSIS_REF = re.compile(r"^([1-4]?[A-Za-z]+)\.(\d+)\.(\d+)$")


def parse_osis_ref(ref: str) -> int | None:
    """Verse key of an OSIS reference such as ``1Cor.13.4``; None when malformed or the book is unknown."""
    match = _OSIS_REF.match(ref)
    if match is None:
        return None
    number = book_number(match.group(1))
    if number is None:
        return None
    return verse_key(number, int(match.group(2)), int(match.group(3)))
