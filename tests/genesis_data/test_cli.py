import json
import shutil
from pathlib import Path

import pytest

from genesis_data.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SMALL_TRANSLATIONS = ("BeaMRK", "ManxGaelic", "JapDenmo", "Tyndale")


@pytest.fixture
def fixture_dir(tmp_path) -> Path:
    folder = tmp_path / "bible"
    folder.mkdir()
    shutil.copy(FIXTURES / "formats" / "Mini.txt", folder / "MiniTxt.txt")
    shutil.copy(FIXTURES / "formats" / "Mini.json", folder / "MiniJson.json")
    shutil.copy(FIXTURES / "formats" / "Mini.csv", folder / "BSB.csv")  # a known name gets its language
    (folder / "notes.md").write_text("not a Bible\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def small_dir(bible_dir, tmp_path_factory) -> Path:
    """The session's small shared translations in a folder of their own, with the cross references beside
    them; same content as the ``small_corpus`` fixture, so its tokenizer and token caches are reused."""
    folder = tmp_path_factory.mktemp("small") / "translations"
    folder.mkdir()
    for name in SMALL_TRANSLATIONS:
        (folder / f"{name}.txt").symlink_to(bible_dir / "translations" / f"{name}.txt")
    (folder.parent / "cross_references.txt").symlink_to(bible_dir / "cross_references.txt")
    return folder


def test_stats_json(fixture_dir, tmp_path, capsys):
    assert main(["stats", "--json", "--bible-dir", str(fixture_dir), "--cache-dir", str(tmp_path / "c"), "--vocab-size", "300"]) == 0
    captured = capsys.readouterr()
    stats = json.loads(captured.out)
    assert set(stats) == {"MiniTxt", "MiniJson", "BSB"}
    assert stats["MiniTxt"] == {**stats["MiniTxt"], "language": "und", "format": "scrollmapper-txt", "books": 3, "verses": 7}
    assert stats["MiniJson"]["format"] == "scrollmapper-json"
    assert stats["BSB"]["language"] == "en" and stats["BSB"]["format"] == "scrollmapper-csv"
    assert stats["MiniTxt"]["tokens"] == stats["MiniJson"]["tokens"] == stats["BSB"]["tokens"] > 7
    assert "notes.md: skipped, not in a known Bible format" in captured.err


def test_stats_table(fixture_dir, tmp_path, capsys):
    assert main(["stats", "--bible-dir", str(fixture_dir), "--cache-dir", str(tmp_path / "c"), "--vocab-size", "300"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["translation", "language", "format", "books", "verses", "tokens"]
    assert [row[:5] for row in rows[1:4]] == [
        ["BSB", "en", "scrollmapper-csv", "3", "7"],
        ["MiniJson", "und", "scrollmapper-json", "3", "7"],
        ["MiniTxt", "und", "scrollmapper-txt", "3", "7"],
    ]
    assert rows[4][:2] == ["total", "21"]


def test_train_tokenizer_writes_a_loadable_file(fixture_dir, tmp_path, capsys):
    from tokenizers import Tokenizer

    output = tmp_path / "out" / "tokenizer.json"
    args = ["train-tokenizer", "--bible-dir", str(fixture_dir), "--cache-dir", str(tmp_path / "c"), "--vocab-size", "300", "--output", str(output)]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(output)
    tokenizer = Tokenizer.from_file(str(output))
    assert tokenizer.encode("Jehovah,").tokens == ["Jehovah", ","]


@pytest.mark.parametrize("task", ["lm", "coherence", "xref", "paraphrase"])
def test_sample_every_task_from_shared_translations(small_dir, cache_dir, capsys, task):
    args = ["sample", "--task", task, "-n", "3", "--bible-dir", str(small_dir), "--cache-dir", str(cache_dir), "--vocab-size", "512", "--block-size", "128"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count(f"--- {task} example") == 3
    if task == "coherence":
        assert out.count("<|sep|>") == 3 and "label " in out
    if task == "xref":
        assert out.count("anchor: <|bos|>") == out.count("positive: <|bos|>") == out.count("negative: <|bos|>") == 3
    if task == "paraphrase":
        assert out.count("a: <|bos|>") == out.count("b: <|bos|>") == 3


def test_prepare_reports_the_caches(small_dir, cache_dir, capsys):
    assert main(["prepare", "--bible-dir", str(small_dir), "--cache-dir", str(cache_dir), "--vocab-size", "512"]) == 0
    out = capsys.readouterr().out
    assert "translations      4 (" in out and "xref 0.075" in out


def test_builtin_sample_without_cross_references_is_a_clear_error(cache_dir, capsys):
    assert main(["sample", "--task", "xref", "-n", "1", "--cache-dir", str(cache_dir), "--vocab-size", "512"]) == 1
    err = capsys.readouterr().err
    assert "task xref is off" in err and "genesis-data: error: --task xref: not available" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["stats", "--bible-dir", "/nonexistent/bible"], "--bible-dir /nonexistent/bible: not a directory"),
        (["sample", "--task", "lm", "--cross-references", "/nonexistent/x.txt"], "--cross-references /nonexistent/x.txt: no such file"),
        (["stats", "--tokenizer", "char", "--vocab-size", "10"], "--vocab-size 10"),
    ],
)
def test_user_mistakes_exit_nonzero_with_one_line(args, message, cache_dir, capsys):
    assert main([*args, "--cache-dir", str(cache_dir)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_malformed_file_names_file_and_line(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "Broken.txt").write_text("### Genesis\n\n[1:1] Fine.\n[1 1] Broken.\n", encoding="utf-8")
    assert main(["stats", "--bible-dir", str(folder), "--cache-dir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert f"{folder / 'Broken.txt'}:4: expected" in err and "Traceback" not in err


def test_bad_n_and_unknown_task(capsys):
    assert main(["sample", "--task", "lm", "-n", "0"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--task", "translate"])
    assert exit_info.value.code == 2


def test_text_file_stats(tmp_path, capsys):
    path = tmp_path / "running.txt"
    path.write_text("In the beginning God created the heaven and the earth.\nAnd Jehovah said.\n", encoding="utf-8")
    assert main(["stats", "--json", "--text-file", str(path), "--cache-dir", str(tmp_path / "c"), "--vocab-size", "300"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats == {"running": {**stats["running"], "language": "und", "format": "plain-text", "books": 0, "verses": 2}}
    assert stats["running"]["tokens"] > 2
