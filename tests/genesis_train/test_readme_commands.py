"""Every command block in the READMEs either runs here, with small settings appended where the written one would
take minutes (a later option wins), or is marked with why it cannot (GPU only, the bench environment, this suite).

A block is marked by the HTML comment on the line before it: `<!-- tested by tests/...py::test_name (...) -->` or
`<!-- not run by the tests: why -->`. Commands run as a user types them, in a fresh working directory (so every path
they name must be one the commands before them write), with `hatch run [env:]` dropped (this is that environment).
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "bible"
READMES = [REPO / "README.md", *sorted((REPO / "packages").glob("*/README.md")), REPO / "benchmarks" / "README.md"]
MARKER = re.compile(r"^<!-- (?:tested by (\S+)(?: .+)?|not run by the tests: .+) -->$")
BIN = Path(sys.executable).parent


def command_blocks():
    """(readme, line number, the marker line, the block's commands) for every ```bash block."""
    for readme in READMES:
        lines = readme.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() == "```bash":
                end = lines.index("```", i + 1)
                text = "\n".join(lines[i + 1:end]).replace("\\\n", " ")
                commands = [shlex.split(line, comments=True) for line in text.splitlines()]
                yield readme, i + 1, lines[i - 1] if i else "", [c for c in commands if c]


def block(readme: str, first_words: str) -> list[list[str]]:
    """The commands of the block in `readme` whose first command starts with `first_words`."""
    for path, _, _, commands in command_blocks():
        if path == REPO / readme and " ".join(commands[0]).startswith(first_words):
            return commands
    raise LookupError(f"{readme}: no command block starting with {first_words!r}")


def run(command: list[str], cwd: Path, extra: list[str] = ()) -> subprocess.CompletedProcess:
    """One README command as a user runs it; `extra` options go after the written ones."""
    if command[:2] == ["hatch", "run"]:
        command = [command[2].split(":")[-1], *command[3:]]
    program = sys.executable if command[0] == "python" else str(BIN / command[0])
    env = {**os.environ, "GENESIS_KERNELS_BACKEND": "torch"}
    return subprocess.run([program, *command[1:], *extra], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=600)


def small(cache_dir: Path) -> list[str]:
    """Settings that make a Bible-text run take seconds."""
    return ["--batch-size", "2", "--block-size", "16", "--vocab-size", "512", "--eval-batches", "1",
            "--eval-interval", "50", "--log-interval", "50", "--no-progress", "--cache-dir", str(cache_dir)]


def test_every_command_block_is_tested_or_says_why():
    for readme, number, marker, _ in command_blocks():
        where = f"{readme.relative_to(REPO)}:{number}"
        found = MARKER.match(marker)
        assert found, f"{where}: the block needs a marker line before it (<!-- tested by ... --> or <!-- not run ...)"
        if found.group(1):
            path, _, name = found.group(1).partition("::")
            assert f"def {name}(" in (REPO / path).read_text(), f"{where}: {found.group(1)} does not exist"


def test_quick_start_trains_and_generates(tmp_path, cache_dir):
    train, _tests = block("README.md", "pip install hatch")
    assert train[:4] == ["pip", "install", "hatch", "&&"]
    done = run(train[4:], tmp_path, small(cache_dir))
    assert done.returncode == 0, done.stderr
    (generate,) = block("README.md", "hatch run genesis-generate")
    generated = run(generate, tmp_path, ["--max-new-tokens", "5"])
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("In the beginning")


def test_genesis_train_readme_commands(tmp_path, cache_dir):
    commands = block("packages/genesis-train/README.md", "genesis-train --mode tiny --steps 200")
    for command in commands:
        command = [word.replace("configs/", f"{REPO}/configs/") for word in command]
        if "--config" in command and "grokking.toml" in command[command.index("--config") + 1]:
            extra = ["--steps", "20", "--eval-interval", "10", "--no-progress", "--cache-dir", str(cache_dir)]
        elif command[1] == "plot":
            extra = []
        elif "--detect-grokking" in command:
            extra = [*small(cache_dir), "--steps", "20", "--alignment-every", "10", "--alignment-verses", "32",
                     "--concepts-every", "10"]
        else:
            extra = small(cache_dir)
        done = run(command, tmp_path, extra)
        if "local_4070.toml" in " ".join(command) and not _has_cuda():
            assert done.returncode == 2 and "this machine has no CUDA device" in done.stderr, done.stderr
            continue
        assert done.returncode == 0, f"{' '.join(command)}: {done.stderr[-2000:]}"
    assert (tmp_path / "runs" / "tiny" / "plot.png").is_file()


def test_grokfast_on_the_papers_model(tmp_path):
    (command,) = block("README.md", "hatch run test:python examples/grokfast_reference.py")
    command = [word.replace("examples/", f"{REPO}/examples/") for word in command]
    done = run(command, tmp_path, ["--steps", "100", "--seeds", "0"])
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads((tmp_path / "runs" / "grokfast_reference" / "summary.json").read_text())
    assert list(runs) == ["seed 0 grokfast", "seed 0 plain"]
    for run_ in runs.values():  # 100 steps: two evaluations, far from memorizing
        assert [point[0] for point in run_["curve"]] == [50, 100] and run_["steps"] == 100
        assert run_["train_99"] is None and all(0 <= value <= 1 for point in run_["curve"] for value in point[1:])
    # The same seed starts from the same model and split, so the first evaluations differ by the filter alone.
    assert runs["seed 0 grokfast"]["curve"] != runs["seed 0 plain"]["curve"]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/bible is not present")
def test_the_bible_measures_run(tmp_path, cache_dir):
    train, plot = block("README.md", "genesis-train --mode tiny --bible-dir")
    train = [word.replace("../shared/bible/", f"{SHARED}/") for word in train]
    done = run(train, tmp_path, [*small(cache_dir), "--steps", "4", "--eval-interval", "2", "--alignment-every", "2",
                                 "--alignment-verses", "32", "--concepts-every", "2", "--grokking-window", "4",
                                 "--grokking-span", "2"])
    assert done.returncode == 0, done.stderr[-2000:]
    drawn = run(plot, tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert (tmp_path / "runs" / "bible-measures" / "plot.png").is_file()


def test_the_grokking_proof_and_the_detector_grid(tmp_path, cache_dir):
    (proof,) = block("README.md", "hatch run test:python examples/grokking.py")
    proof = [word.replace("examples/", f"{REPO}/examples/") for word in proof]
    done = run(proof, tmp_path, ["--steps", "30"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "runs" / "grokking" / "summary.json").is_file()
    assert (tmp_path / "runs" / "grokking" / "grokking.png").is_file()
    # The README's grid command (in its text), on these runs, with a short Bible run in place of the 3,000-step one.
    bible = run(["genesis-train", "--mode", "tiny", "--steps", "20", "--detect-grokking", "--out-dir",
                 "runs/bible-3000"], tmp_path, small(cache_dir))
    assert bible.returncode == 0, bible.stderr[-2000:]
    text = (REPO / "README.md").read_text()
    grid = re.search(r"`(hatch run test:python examples/detector_grid\.py [^`]*)`", " ".join(text.split())).group(1)
    grid = [word.replace("examples/", f"{REPO}/examples/") for word in shlex.split(grid)]
    shown = run(grid, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].split()[:3] == ["window", "threshold", "span"]
