"""Progress of the long phases before and around training: reading translations, training a tokenizer, tokenizing,
evaluating. Phases that end within a few seconds say nothing.

On a terminal a phase is a tqdm bar that appears once it has run for `DELAY` seconds. Anywhere else (a log file, a
pipe, CI) it is plain lines: the first after `PLAIN_EVERY` seconds, then one every `PLAIN_EVERY` seconds and one
when the phase ends, so a log shows a long phase moving without filling up with redrawn bars.

`show_progress(False)` silences every phase (genesis-train's `--no-progress`); it is one switch for the process, as a
logging level is.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

DELAY = 2.0  # seconds before a terminal bar appears
PLAIN_EVERY = 10.0  # seconds between plain lines

_enabled = True


def show_progress(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def terminal_bars() -> bool:
    """Whether libraries with progress bars of their own (the tokenizer trainer) should draw them: progress is on and
    stderr is a terminal (off a terminal the tokenizer trainer still prints blank lines)."""
    return _enabled and sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "it",
          stream: TextIO | None = None) -> Iterator[T]:
    """Yields `items`, showing how many have been done (of `total`, or of len(items) when it has one)."""
    stream = stream if stream is not None else sys.stderr
    if not _enabled:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    if stream.isatty():
        yield from tqdm(items, desc=description, total=total, unit=f" {unit}", file=stream, delay=DELAY,
                        dynamic_ncols=True)
        return
    of = f" of {total:,}" if total is not None else ""
    start = last = time.perf_counter()
    done, shown = 0, False
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= PLAIN_EVERY:
            print(f"{description}: {done:,}{of} {unit} ({now - start:,.0f} s)", file=stream, flush=True)
            last, shown = now, True
    if shown:
        print(f"{description}: {done:,}{of} {unit}, done in {time.perf_counter() - start:,.0f} s", file=stream,
              flush=True)


@contextlib.contextmanager
def running(description: str, stream: TextIO | None = None) -> Iterator[None]:
    """Shows that a phase with nothing to count (a compilation) is still running: the seconds it has taken, on a
    terminal redrawn every second, elsewhere as the plain lines `track` prints."""
    stream = stream if stream is not None else sys.stderr
    if not _enabled:
        yield
        return
    done = threading.Event()
    start = time.perf_counter()

    def show() -> None:
        if stream.isatty():
            bar = tqdm(desc=description, bar_format="{desc}: {elapsed}", file=stream, delay=DELAY)
            while not done.wait(1.0):
                if time.perf_counter() - start >= DELAY:  # tqdm's delay holds for update(), not for refresh()
                    bar.refresh()
            bar.close()
            return
        shown = False
        while not done.wait(PLAIN_EVERY):
            print(f"{description}: {time.perf_counter() - start:,.0f} s", file=stream, flush=True)
            shown = True
        if shown:
            print(f"{description}: done in {time.perf_counter() - start:,.0f} s", file=stream, flush=True)

    thread = threading.Thread(target=show, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
