import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from genesis_data.canon import verse_key
from genesis_data.corpus import KNOWN_LANGUAGES, UNKNOWN_LANGUAGE, Corpus

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _count_verses_with_text(path: Path) -> int:
    """Independent count, the way grep would: verse lines with anything but whitespace after '[c:v]'."""
    count = 0
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            reference, _, text = line.partition("] ")
            count += reference.startswith("[") and bool(text.strip())
    return count


def test_every_shared_translation_has_its_verse_count(shared_corpus, bible_dir, readme_verse_counts):
    files = sorted((bible_dir / "translations").glob("*.txt"))
    assert len(files) == 39
    assert sorted(shared_corpus.names) == sorted(path.stem for path in files)
    assert len(readme_verse_counts) == 39
    for path in files:
        translation = shared_corpus[path.stem]
        assert len(translation) == _count_verses_with_text(path), path.stem
        assert len(translation) == readme_verse_counts[path.stem], path.stem
        assert translation.format == "scrollmapper-txt"
    assert sum(len(t) for t in shared_corpus.translations) == 672_403


def test_books_with_text_in_shared_translations(shared_corpus):
    assert len(shared_corpus["BSB"].books) == 66
    assert len(shared_corpus["ChiSB"].books) == 73
    assert len(shared_corpus["Anderson"].books) == 27
    assert shared_corpus["BeaMRK"].books == ["Mark"]
    assert shared_corpus["RusMakarij"].books == ["Gen", "Exod", "Lev", "Num", "Deut"]
    assert shared_corpus["ManxGaelic"].books == ["Esth", "Jonah", "Matt", "Luke", "John"]


def test_shared_translations_languages(shared_corpus):
    assert {t.name: t.language for t in shared_corpus.translations} == {
        name: KNOWN_LANGUAGES[name] for name in shared_corpus.names
    }
    assert len({t.language for t in shared_corpus.translations}) == 25


def test_csv_equals_txt(bible_dir, cache_dir, shared_corpus):
    csv_corpus = Corpus.from_bible_dir(bible_dir / "csv", cache_dir=cache_dir)
    assert sorted(csv_corpus.names) == ["ChiUn", "HebModern", "JPS", "RusMakarij", "StatResGNT"]
    for translation in csv_corpus.translations:
        assert translation.format == "scrollmapper-csv"
        from_txt = shared_corpus[translation.name]
        np.testing.assert_array_equal(translation.keys, from_txt.keys)
        assert translation.texts == from_txt.texts


def test_quirks_of_real_files_are_cleaned(shared_corpus):
    gen = shared_corpus["FreGeneve1669"]
    assert not any("&amp;" in text for text in gen.texts)
    assert any(" & " in text for text in gen.texts)
    heb = shared_corpus["HebModern"]
    assert "UNBOUND" not in heb.texts[-1]
    for translation in shared_corpus.translations:
        assert all(text == text.strip() and "\n" not in text and "  " not in text for text in translation.texts)


def test_cached_read_equals_first_read(bible_dir, tmp_path):
    folder = tmp_path / "bible"
    folder.mkdir()
    shutil.copy(bible_dir / "translations" / "BeaMRK.txt", folder)
    first = Corpus.from_bible_dir(folder, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "parsed").iterdir())) == 1
    second = Corpus.from_bible_dir(folder, cache_dir=tmp_path / "cache")
    assert second["BeaMRK"].texts == first["BeaMRK"].texts
    np.testing.assert_array_equal(second["BeaMRK"].keys, first["BeaMRK"].keys)
    assert second.fingerprint == first.fingerprint


def test_changed_file_is_reparsed(tmp_path):
    folder = tmp_path / "bible"
    folder.mkdir()
    shutil.copy(FIXTURES / "formats" / "Mini.txt", folder)
    before = Corpus.from_bible_dir(folder, cache_dir=tmp_path / "cache")
    with (folder / "Mini.txt").open("a", encoding="utf-8") as file:
        file.write("### Jude\n\n[1:25] To the only wise God.\n")
    after = Corpus.from_bible_dir(folder, cache_dir=tmp_path / "cache")
    assert len(after["Mini"]) == len(before["Mini"]) + 1
    assert after.fingerprint != before.fingerprint


def test_folder_of_mixed_formats_skips_unknown_files_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "bible"
    folder.mkdir()
    shutil.copy(FIXTURES / "formats" / "Mini.json", folder / "MiniJson.json")
    shutil.copy(FIXTURES / "formats" / "Mini.csv", folder / "MiniCsv.csv")
    (folder / "notes.txt").write_text("Reading plan for the year.\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        corpus = Corpus.from_bible_dir(folder, cache_dir=tmp_path / "cache")
    assert corpus.names == ["MiniCsv", "MiniJson"]
    assert corpus.skipped == [folder / "notes.txt"]
    assert f"{folder / 'notes.txt'}: skipped, not in a known Bible format" in caplog.text
    assert {t.language for t in corpus.translations} == {UNKNOWN_LANGUAGE}


def test_ebible_language_comes_from_the_file_name(tmp_path):
    folder = tmp_path / "ebible"
    shutil.copytree(FIXTURES / "ebible", folder)
    shutil.copy(folder / "eng-mini.txt", folder / "custom.txt")
    corpus = Corpus.from_bible_dir(folder, cache_dir=tmp_path / "cache")
    assert {t.name: (t.format, t.language) for t in corpus.translations} == {
        "custom": ("ebible", UNKNOWN_LANGUAGE),
        "eng-mini": ("ebible", "eng"),
    }
    assert corpus.skipped == []  # vref.txt is part of the format, not a translation


def test_folder_without_translations_error_points_at_subfolders(bible_dir, cache_dir):
    with pytest.raises(ValueError, match="subfolders csv, translations"):
        Corpus.from_bible_dir(bible_dir, cache_dir=cache_dir)


def test_builtin_corpus(builtin_corpus):
    assert builtin_corpus.names == ["ASV", "KJV", "WEB"]
    asv, kjv, web = builtin_corpus.translations
    assert sum(text.count("Jehovah") for text in asv.texts) == 6_879
    assert len(kjv) == len(web) == 31_102
    assert len(asv) == 31_086  # the ASV package leaves 16 verses empty
    assert kjv.texts[0] == "In the beginning God created the heaven and the earth."
    assert kjv.keys[0] == verse_key(1, 1, 1) and kjv.keys[-1] == verse_key(66, 22, 21)
    assert not any("`" in text for text in web.texts)
    assert all(len(t.books) == 66 and t.language == "en" for t in builtin_corpus.translations)


def test_builtin_parse_is_cached(builtin_corpus, tmp_path):
    first = Corpus.builtin(cache_dir=tmp_path)
    assert len(list((tmp_path / "parsed").glob("pythonbible-*.npz"))) == 3
    second = Corpus.builtin(cache_dir=tmp_path)
    for a, b, c in zip(first.translations, second.translations, builtin_corpus.translations):
        assert a.texts == b.texts == c.texts
        assert a.fingerprint == b.fingerprint
    assert first.fingerprint == second.fingerprint == builtin_corpus.fingerprint


def test_text_file_is_one_unaligned_translation(tmp_path):
    path = tmp_path / "genesis.txt"
    path.write_text("In the beginning God created\nthe heaven and the earth.\n\nAnd the earth was void.\n", encoding="utf-8")
    corpus = Corpus.from_text_file(path)
    (translation,) = corpus.translations
    assert translation.name == "genesis" and not translation.aligned and translation.format == "plain-text"
    assert translation.texts[2] == "And the earth was void."
    assert translation.books == []


def test_missing_sources_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        Corpus.from_bible_dir(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no such file"):
        Corpus.from_text_file(tmp_path / "nothing.txt")


def test_one_translation_per_name_when_formats_repeat(tmp_path):
    corpus = Corpus.from_bible_dir(FIXTURES / "formats", cache_dir=tmp_path)
    assert corpus.names == ["Mini"]
    assert corpus["Mini"].format == "scrollmapper-csv"  # the first of Mini.csv, Mini.json, Mini.txt
