"""OpenBible.info cross references: a tab-separated ``From Verse, To Verse, Votes`` table with OSIS
references (``Gen.1.1``), where ``To Verse`` may be a range written in full (``John.1.1-John.1.3``) and votes
may be negative (users voted the link down)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genesis_data.canon import parse_osis_ref
from genesis_data.readers.parsing import BibleFormatError, decode_text, format_error, split_lines

_EXPECTED = "'<from verse>\\t<to verse or range>\\t<votes>' with OSIS references such as Gen.1.1"


@dataclass
class CrossReferences:
    source: np.ndarray  # int64 verse keys
    target_first: np.ndarray  # int64 verse keys; equal to target_last for a single verse
    target_last: np.ndarray
    votes: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.source)


def read_cross_references(path: str | Path) -> CrossReferences:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--cross-references {path}: no such file")
    rows: list[tuple[int, int, int, int]] = []
    for line_number, line in enumerate(split_lines(decode_text(path, path.read_bytes())), start=1):
        if not line.strip() or line.startswith("From Verse"):
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise format_error(path, line_number, _EXPECTED, line)
        first_ref, _, last_ref = fields[1].partition("-")
        source, first = parse_osis_ref(fields[0]), parse_osis_ref(first_ref)
        last = parse_osis_ref(last_ref) if last_ref else first
        try:
            votes = int(fields[2])
        except ValueError:
            votes = None
        if source is None or first is None or last is None or votes is None or last < first:
            raise format_error(path, line_number, _EXPECTED, line)
        rows.append((source, first, last, votes))
    if not rows:
        raise BibleFormatError(f"{path}: expected OpenBible.info cross references, found no rows")
    table = np.array(rows, dtype=np.int64)
    return CrossReferences(table[:, 0], table[:, 1], table[:, 2], table[:, 3])
