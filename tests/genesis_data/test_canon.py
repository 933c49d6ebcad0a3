import pythonbible
import pytest

from genesis_data import canon


@pytest.mark.parametrize(
    "spelling, osis",
    [
        ("I Samuel", "1Sam"), ("1 Samuel", "1Sam"), ("1Sam", "1Sam"), ("1SA", "1Sam"), ("SAMUEL_1", "1Sam"),
        ("III John", "3John"), ("3JN", "3John"), ("JOHN_3", "3John"), ("John", "John"), ("JHN", "John"),
        ("Revelation of John", "Rev"), ("Revelation", "Rev"), ("Song of Solomon", "Song"), ("SNG", "Song"),
        ("SONG_OF_SONGS", "Song"), ("Psalms", "Ps"), ("Isaiah", "Isa"), ("ISA", "Isa"), ("Judges", "Judg"),
        ("JDG", "Judg"), ("Jude", "Jude"), ("JUD", "Jude"), ("Philippians", "Phil"), ("PHP", "Phil"),
        ("Philemon", "Phlm"), ("IV Maccabees", "4Macc"), ("Prayer of Manasses", "PrMan"), ("Sirach", "Sir"),
        ("ECCLESIASTICUS", "Sir"), ("Wisdom", "Wis"), ("I Enoch", "1En"), ("Bel and the Dragon", "Bel"),
    ],
)
def test_book_spellings_map_to_one_osis_id(spelling, osis):
    assert canon.BOOKS[canon.book_number(spelling) - 1].osis == osis


def test_unknown_book_is_none():
    assert canon.book_number("Book of Mormon") is None


def test_every_pythonbible_book_is_known():
    for book in pythonbible.Book:
        assert canon.book_number(book.name) is not None, book.name


def test_protestant_order_matches_pythonbible_numbering():
    # pythonbible numbers Genesis..Revelation 1..66, as we do; the verse key layout is the same.
    for book in list(pythonbible.Book)[:66]:
        assert canon.book_number(book.name) == book.value


def test_verse_keys_round_trip_and_sort_canonically():
    key = canon.verse_key(canon.book_number("Romans"), 8, 28)
    assert canon.split_key(key) == (45, 8, 28)
    assert canon.format_key(key) == "Rom 8:28"
    assert canon.verse_key(1, 50, 26) < canon.verse_key(2, 1, 1)


def test_osis_references():
    assert canon.parse_osis_ref("1Cor.13.4") == canon.verse_key(46, 13, 4)
    assert canon.parse_osis_ref("3John.1.15") == canon.verse_key(64, 1, 15)
    assert canon.parse_osis_ref("Gen 1 1") is None
    assert canon.parse_osis_ref("Xyz.1.1") is None
