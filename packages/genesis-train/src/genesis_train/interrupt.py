"""Stopping a run on request: Ctrl-C (SIGINT) or SIGTERM, which schedulers such as SLURM send before they kill a job.

The first signal only sets a flag: the trainer finishes the step it is in, writes a checkpoint and stops with
`Interrupted`, which the command line reports in one line (exit status 128 + the signal's number, as a shell
reports a process killed by it). A second signal stops at once (KeyboardInterrupt), for a user who cannot wait for
the step; checkpoints are written to a temporary directory and renamed, so the last complete one stays intact.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


class Interrupted(Exception):
    """Training stopped on a signal; the message says at which step and which checkpoint continues it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum


class StopSignals:
    """While active (a `with` block), SIGINT and SIGTERM request a stop instead of killing the process.

    `requested` holds the first signal's name, or None. Outside the main thread Python cannot install handlers, so
    there the block does nothing and the signals keep their usual effect."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce=lambda text: print(text, file=sys.stderr, flush=True)):
        self.announce = announce
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second signal: stop now
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum
        self.announce(f"\ngenesis-train: {signal.Signals(signum).name} received: finishing this step and writing a "
                      f"checkpoint (send it again to stop at once)")

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()
