"""Progress of long phases: a tqdm bar on a terminal, plain lines elsewhere, nothing for short phases or when off."""

import io
import re
import time
from pathlib import Path

import pytest

from genesis_data import progress
from genesis_data.corpus import Corpus

FORMATS = Path(__file__).parent / "fixtures" / "formats"


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def shown(monkeypatch):
    monkeypatch.setattr(progress, "_enabled", True)


def test_a_short_phase_off_a_terminal_says_nothing():
    stream = io.StringIO()
    assert list(progress.track(range(5), "reading", stream=stream)) == [0, 1, 2, 3, 4]
    assert stream.getvalue() == ""


def test_a_long_phase_off_a_terminal_is_plain_lines(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)  # every item is "long" enough for a line
    stream = io.StringIO()
    assert list(progress.track(iter("abc"), "reading x", total=3, unit="files", stream=stream)) == ["a", "b", "c"]
    lines = stream.getvalue().splitlines()
    assert [re.sub(r"\(\d+ s\)|\d+ s$", "T", line) for line in lines] == [
        "reading x: 1 of 3 files T", "reading x: 2 of 3 files T", "reading x: 3 of 3 files T",
        "reading x: 3 of 3 files, done in T"]
    assert "\r" not in stream.getvalue()


def test_on_a_terminal_a_bar(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    stream = Terminal()
    assert list(progress.track([1, 2, 3], "tokenizing", unit="translations", stream=stream)) == [1, 2, 3]
    assert re.search(r"tokenizing: 100%.*3/3", stream.getvalue())


def test_switched_off_says_nothing(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)
    progress.show_progress(False)
    stream = io.StringIO()
    assert list(progress.track(range(3), "reading", stream=stream)) == [0, 1, 2]
    assert stream.getvalue() == ""


def test_reading_a_bible_directory_shows_its_files(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)
    corpus = Corpus.from_bible_dir(FORMATS, cache_dir=tmp_path)
    files = sorted(p for p in FORMATS.iterdir() if p.is_file() and not p.name.startswith("."))
    err = capsys.readouterr().err
    assert f"reading {FORMATS}: {len(files)} of {len(files)} files, done in" in err
    assert len(corpus.translations) >= 1


def test_library_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", Terminal())
    assert progress.terminal_bars()
    progress.show_progress(False)
    assert not progress.terminal_bars()
    progress.show_progress(True)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress.terminal_bars()


def test_a_phase_with_nothing_to_count_shows_its_seconds(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.05)
    stream = io.StringIO()
    with progress.running("compiling", stream=stream):
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and all(re.fullmatch(r"compiling: \d+ s", line) for line in lines[:-1]), lines
    assert re.fullmatch(r"compiling: done in \d+ s", lines[-1])

    monkeypatch.setattr(progress, "DELAY", 0.0)
    terminal = Terminal()
    with progress.running("compiling", stream=terminal):
        time.sleep(1.5)  # the bar is redrawn every second
    assert re.search(r"compiling: 00:0[12]", terminal.getvalue()), terminal.getvalue()

    short, off = io.StringIO(), io.StringIO()
    monkeypatch.setattr(progress, "PLAIN_EVERY", 10.0)
    with progress.running("compiling", stream=short):
        pass
    progress.show_progress(False)
    with progress.running("compiling", stream=off):
        time.sleep(0.1)
    assert short.getvalue() == off.getvalue() == ""
