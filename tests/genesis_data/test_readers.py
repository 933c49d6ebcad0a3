import shutil
from pathlib import Path

import pytest

from genesis_data.canon import book_number, verse_key
from genesis_data.readers import BibleFormatError, clean_verse, read_bible_file
from genesis_data.readers.openbible import read_cross_references
from genesis_data.readers.plain_text import parse as parse_plain_text

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# What every fixture format holds: blank and whitespace-only verses dropped, "&amp;" decoded, ends stripped.
EXPECTED_KEYS = [
    verse_key(1, 1, 1), verse_key(1, 1, 2), verse_key(1, 1, 5),
    verse_key(2, 6, 3), verse_key(2, 6, 4), verse_key(64, 1, 14), verse_key(64, 1, 15),
]
EXPECTED_TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void.",
    "And God called the light Day, & the darkness he called Night.",
    "And I appeared unto Abraham, but by my name JEHOVAH was I not known to them.",
    "I am Jehovah, (Jehovah) thy God.",
    'But I trust I shall shortly see thee, and we shall speak "face to face".',
    "Peace be to thee.",
]


@pytest.mark.parametrize(
    "path, format_name",
    [
        (FIXTURES / "formats" / "Mini.txt", "scrollmapper-txt"),
        (FIXTURES / "formats" / "Mini.csv", "scrollmapper-csv"),
        (FIXTURES / "formats" / "Mini.json", "scrollmapper-json"),
        (FIXTURES / "ebible" / "eng-mini.txt", "ebible"),
    ],
)
def test_every_format_reads_the_same_verses(path, format_name):
    parsed = read_bible_file(path)
    assert parsed.format == format_name
    assert parsed.keys == EXPECTED_KEYS
    assert parsed.texts == EXPECTED_TEXTS


@pytest.mark.parametrize("name", ["Mini.txt", "Mini.csv", "Mini.json"])
def test_bom_and_crlf_are_handled(tmp_path, name):
    raw = (FIXTURES / "formats" / name).read_bytes()
    converted = tmp_path / name
    converted.write_bytes(b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n"))
    parsed = read_bible_file(converted)
    assert (parsed.keys, parsed.texts) == (EXPECTED_KEYS, EXPECTED_TEXTS)


def test_ebible_with_bom_and_crlf(tmp_path):
    for name in ("vref.txt", "eng-mini.txt"):
        raw = (FIXTURES / "ebible" / name).read_bytes()
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n"))
    parsed = read_bible_file(tmp_path / "eng-mini.txt")
    assert (parsed.keys, parsed.texts) == (EXPECTED_KEYS, EXPECTED_TEXTS)


def test_merged_verse_range_is_read_as_its_first_verse(tmp_path):
    path = tmp_path / "Merged.txt"
    path.write_text("### Genesis\n\n[1:1-2] In the beginning, and the earth.\n[1:3] Light.\n", encoding="utf-8")
    parsed = read_bible_file(path)
    assert parsed.keys == [verse_key(1, 1, 1), verse_key(1, 1, 3)]


def test_unknown_format_returns_none(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Just some notes about the translation.\n", encoding="utf-8")
    assert read_bible_file(path) is None
    other = tmp_path / "data.json"
    other.write_text('{"something": []}', encoding="utf-8")
    assert read_bible_file(other) is None


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("BadLine.txt", "### Genesis\n\n[1:1] Fine.\nstray text\n", r"BadLine\.txt:4: expected '### <Book>', '\[<chapter>:<verse>\] <text>' or an empty line, found 'stray text'"),
        ("BadRef.txt", "### Genesis\n\n[1:1] Fine.\n[1:x] Broken.\n", r"BadRef\.txt:4: expected .*found '\[1:x\] Broken\.'"),
        ("NoHeader.txt", "[1:1] Orphan verse.\n", r"NoHeader\.txt:1: expected a '### <Book>' header before the first verse"),
        ("BadBook.txt", "### Genesis\n\n[1:1] Fine.\n\n### Hezekiah\n\n[1:1] x\n", r"BadBook\.txt:5: expected a known book name, found 'Hezekiah'"),
        ("Twice.txt", "### Genesis\n\n[1:1] One.\n[1:1] Again.\n", r"Twice\.txt:4: expected each verse once"),
        ("BigVerse.txt", "### Genesis\n\n[1:1000] Too far.\n", r"BigVerse\.txt:3: expected chapter 1-999 and verse 0-999, found '\[1:1000\] Too far\.'"),
        ("BadRow.csv", "Book,Chapter,Verse,Text\nGenesis,1,1,Fine.\nGenesis,one,2,Broken.\n", r"BadRow\.csv:3: expected '<Book>,<chapter>,<verse>,<text>'"),
        ("Short.csv", "Book,Chapter,Verse,Text\nGenesis,1,1,Fine.\nGenesis,1\n", r"Short\.csv:3: expected '<Book>,<chapter>,<verse>,<text>'"),
        ("BadQuote.csv", 'Book,Chapter,Verse,Text\nGenesis,1,1,"Fine."\nGenesis,1,2,"Un"closed\n', r"BadQuote\.csv:3: expected an RFC 4180 CSV row"),
        ("Syntax.json", '{"books": [\n  {"name": "Genesis",\n  "chapters": [}\n]}', r"Syntax\.json:3: expected JSON"),
        ("Shape.json", '{"books": [{"name": "Genesis", "chapters": [{"chapter": 1, "verses": [{"verse": "1", "text": "x"}]}]}]}', r"Shape\.json:books\[0\]\.chapters\[0\]\.verses\[0\]: expected int field 'verse'"),
    ],
)
def test_malformed_lines_fail_with_file_line_and_expectation(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BibleFormatError, match=message):
        read_bible_file(path)


def test_not_utf8_fails_with_line(tmp_path):
    path = tmp_path / "Latin1.txt"
    path.write_bytes("### Genesis\n\n[1:1] Caf\xe9.\n".encode("latin-1"))
    with pytest.raises(BibleFormatError, match=r"Latin1\.txt:3: expected UTF-8 text"):
        read_bible_file(path)


def test_ebible_longer_than_vref_fails(tmp_path):
    shutil.copy(FIXTURES / "ebible" / "vref.txt", tmp_path / "vref.txt")
    (tmp_path / "long.txt").write_text("a\n" * 10, encoding="utf-8")
    with pytest.raises(BibleFormatError, match=r"long\.txt:10: expected at most 9 lines"):
        read_bible_file(tmp_path / "long.txt")


def test_ebible_vref_with_deuterocanon_and_extra_usfm_books(tmp_path):
    (tmp_path / "vref.txt").write_text("GEN 1:1\nTOB 1:1\nS3Y 1:1\nDAG 3:24\nPS2 1:1\nJSA 1:1\nENO 1:1\n4BA 1:1\n", encoding="utf-8")
    (tmp_path / "x.txt").write_text("a\nb\n\n\nc\n", encoding="utf-8")
    parsed = read_bible_file(tmp_path / "x.txt")
    assert parsed.keys == [verse_key(1, 1, 1), verse_key(book_number("Tobit"), 1, 1), verse_key(book_number("Psalm 151"), 1, 1)]


def test_unicode_line_separators_inside_verses_do_not_split_lines(tmp_path):
    shutil.copy(FIXTURES / "ebible" / "vref.txt", tmp_path / "vref.txt")
    lines = (FIXTURES / "ebible" / "eng-mini.txt").read_text(encoding="utf-8").split("\n")
    lines[0] = "In the beginning\u2028God\x85created\x0cthe heaven."
    (tmp_path / "eng-mini.txt").write_text("\n".join(lines), encoding="utf-8")
    parsed = read_bible_file(tmp_path / "eng-mini.txt")
    assert parsed.keys == EXPECTED_KEYS
    assert parsed.texts[0] == "In the beginning God created the heaven."


def test_bad_vref_line_fails(tmp_path):
    (tmp_path / "vref.txt").write_text("GEN 1:1\nGenesis one\n", encoding="utf-8")
    (tmp_path / "x.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(BibleFormatError, match=r"vref\.txt:2: expected a reference such as 'GEN 1:1'"):
        read_bible_file(tmp_path / "x.txt")


def test_clean_verse():
    assert clean_verse("  Foo &amp; bar\u3000baz\xa0qux\\tend  ") == "Foo & bar baz qux end"
    assert clean_verse("Amen. #THE UNBOUND BIBLE (www.unboundbible.org) #name Italian") == "Amen."
    assert clean_verse(" \u3000 ") == ""
    assert clean_verse("{gloss} [added] ¶ kept") == "{gloss} [added] ¶ kept"


def test_plain_text_lines_are_units(tmp_path):
    path = tmp_path / "running.txt"
    path.write_bytes(b"\xef\xbb\xbfIn the beginning\r\n\r\n  God created  \r\nthe heaven.")
    keys, texts = parse_plain_text(path, path.read_bytes())
    assert keys == [1, 3, 4]
    assert texts == ["In the beginning", "God created", "the heaven."]


def test_cross_references_parse_ranges_and_votes(tmp_path):
    path = tmp_path / "xref.txt"
    path.write_text(
        "From Verse\tTo Verse\tVotes\t#www.openbible.info CC-BY\n"
        "Gen.1.1\tJohn.1.1-John.1.3\t51\n"
        "Gen.1.1\tLev.27.34-Num.1.1\t-3\n"
        "1Cor.13.4\t3John.1.15\t0\n",
        encoding="utf-8",
    )
    refs = read_cross_references(path)
    assert refs.source.tolist() == [verse_key(1, 1, 1)] * 2 + [verse_key(46, 13, 4)]
    assert refs.target_first.tolist() == [verse_key(43, 1, 1), verse_key(3, 27, 34), verse_key(64, 1, 15)]
    assert refs.target_last.tolist() == [verse_key(43, 1, 3), verse_key(4, 1, 1), verse_key(64, 1, 15)]
    assert refs.votes.tolist() == [51, -3, 0]


def test_cross_references_bad_row(tmp_path):
    path = tmp_path / "xref.txt"
    path.write_text("From Verse\tTo Verse\tVotes\nGen.1.1\tJohn.1.1\n", encoding="utf-8")
    with pytest.raises(BibleFormatError, match=r"xref\.txt:2: expected '<from verse>\\t<to verse or range>\\t<votes>'"):
        read_cross_references(path)


def test_shared_cross_references(bible_dir):
    refs = read_cross_references(bible_dir / "cross_references.txt")
    assert len(refs) == 344_799
    assert int((refs.target_first != refs.target_last).sum()) == 88_150
    assert int((refs.votes < 0).sum()) == 1_236
    assert int((refs.votes == 0).sum()) == 2_251
    assert len(set(refs.source.tolist())) == 29_364
