"""genesis-train under torchrun: 2 CPU ranks (gloo), data parallel (DDP) and sharded (--fsdp), against one process
with the same global batch; resuming; and every rank stopping when one fails."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genesis_model import GenesisTokenizer, generate, load_pretrained

HERE = Path(__file__).parent
RUN = ["--mode", "tiny", "--steps", "6", "--batch-size", "4", "--block-size", "64", "--vocab-size", "512",
       "--eval-interval", "3", "--log-interval", "1", "--eval-batches", "1", "--checkpoint-interval", "3",
       "--device", "cpu", "--no-progress"]
# The cross-translation alignment runs the measures' forward (`pooled`) every 3 steps.
MEASURED = ["--alignment-every", "3", "--alignment-verses", "16"]
LOGGED = ("loss_", "accuracy_", "val_loss_", "val_accuracy_", "grad_norm", "weight_norm", "alignment_distance",
          "alignment_ratio")


def genesis_train(args: list[str], ranks: int = 1, script: list[str] | None = None,
                  timeout: int = 300) -> subprocess.CompletedProcess:
    """genesis-train in one process, or under torchrun with `ranks` processes (a random free port each time)."""
    program = script or ["-m", "genesis_train"]
    if ranks > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                   *program, *args]
    else:
        command = [sys.executable, *program, *args]
    env = {**os.environ, "GENESIS_KERNELS_BACKEND": "torch", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def logged(run_dir: Path) -> dict[int, dict[str, float]]:
    """{step: the numbers both kinds of run log} from metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k.startswith(LOGGED)} for r in records if "event" not in r}


def assert_same_numbers(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]], rel: float) -> None:
    assert sorted(a) == sorted(b)
    for step in a:
        assert set(a[step]) == set(b[step]), step
        for name, value in a[step].items():
            assert value == pytest.approx(b[step][name], rel=rel, abs=1e-7), (step, name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 2-rank run and one single process with --grad-accum 2 (the same 8 sequences a step), sharing a cache."""
    root = tmp_path_factory.mktemp("ddp")
    cache = ["--cache-dir", str(root / "cache")]
    single = genesis_train([*RUN, *MEASURED, *cache, "--grad-accum", "2", "--out-dir", str(root / "single")])
    assert single.returncode == 0, single.stderr
    two = genesis_train([*RUN, *MEASURED, *cache, "--out-dir", str(root / "two")], ranks=2)
    assert two.returncode == 0, two.stdout + two.stderr
    return root, two


def test_two_ranks_match_one_process_with_the_same_global_batch(runs):
    root, two = runs
    output = two.stdout + two.stderr
    assert "global batch: 4 sequences x 1 micro-batches x 2 processes = 8 sequences of up to 64 tokens a step" \
        in output
    assert output.count("done: val loss") == 1  # rank 0 alone reports
    assert "Traceback" not in output
    single, ddp = logged(root / "single"), logged(root / "two")
    assert sorted(ddp) == [0, 1, 2, 3, 4, 5, 6]
    # Every task's loss and accuracy, the gradient norm and the validation numbers: the same sums in another
    # order (DDP's all-reduce against one process's accumulation), so equal to fp32 reduction-order tolerance.
    assert_same_numbers(ddp, single, rel=1e-5)
    assert any("loss_coherence" in r or "loss_paraphrase" in r for r in ddp.values())  # heads unused by a rank

    # Rank 0 alone wrote: one metrics file, checkpoints every 3 steps; the checkpoint loads in a single process.
    assert sorted(p.name for p in (root / "two" / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]
    model = load_pretrained(root / "two" / "checkpoints" / "step-00000006")
    reference = load_pretrained(root / "single" / "checkpoints" / "step-00000006")
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_a_two_rank_run_resumed_reproduces_its_own_numbers(runs):
    root, _ = runs
    first = logged(root / "two")
    run_dir = root / "two"
    (run_dir / "checkpoints" / "step-00000006").rename(root / "step-6-aside")  # as if stopped after step 3
    resumed = genesis_train([*RUN, *MEASURED, "--cache-dir", str(root / "cache"), "--out-dir", str(run_dir),
                             "--resume"], ranks=2)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert_same_numbers(logged(run_dir), first, rel=1e-6)

    # The same run in one process: exact when processes x --grad-accum stays 2, refused otherwise.
    (run_dir / "checkpoints" / "step-00000006").rename(root / "step-6-resumed")
    refused = genesis_train([*RUN, "--cache-dir", str(root / "cache"), "--out-dir", str(run_dir), "--resume"])
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith(
        f"genesis-train: error: --resume: {run_dir / 'checkpoints' / 'step-00000003'} was trained by 2 process(es) "
        f"with 2 micro-batches a step, this run has 1 with 1")
    one = genesis_train([*RUN, *MEASURED, "--cache-dir", str(root / "cache"), "--out-dir", str(run_dir), "--resume",
                         "--grad-accum", "2"])
    assert one.returncode == 0, one.stderr
    assert_same_numbers(logged(run_dir), first, rel=1e-5)


def state_megabytes(run_dir: Path) -> float:
    """What rank 0 held of parameters and optimizer state after its first step (metrics.jsonl's state_mb)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r["state_mb"] for r in records if "state_mb" in r)


@pytest.fixture(scope="module")
def sharded(runs):
    root, _ = runs
    result = genesis_train([*RUN, *MEASURED, "--cache-dir", str(root / "cache"), "--out-dir", str(root / "fsdp"),
                            "--fsdp"], ranks=2)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result


def test_two_sharded_ranks_match_one_process_and_each_holds_half_the_state(sharded):
    root, result = sharded
    assert "Traceback" not in result.stdout + result.stderr
    single, fsdp = logged(root / "single"), logged(root / "fsdp")
    # Sharding changes where sums happen (the gradient norm over shards, the weight norms), not the numbers.
    assert_same_numbers(fsdp, single, rel=1e-5)
    assert any(name.startswith("alignment_") for record in fsdp.values() for name in record)
    # Parameters (4 bytes each) + AdamW's two moments (8 bytes for each parameter that has had a gradient: after the
    # first step, not the heads of tasks that step did not draw) in one process; half of it (plus a shard's
    # padding) on each of two ranks.
    reference = load_pretrained(root / "single" / "checkpoints" / "step-00000006")
    d = reference.config.d_model
    heads = {"coherence": d + 1, "xref": d * d, "paraphrase": d * d}
    untouched = sum(size for task, size in heads.items() if f"loss_{task}" not in single[1])
    params = sum(p.numel() for p in reference.parameters())
    whole, half = state_megabytes(root / "single"), state_megabytes(root / "fsdp")
    assert whole == pytest.approx((12 * params - 8 * untouched) / 2**20, rel=1e-5)  # + a step count per tensor
    assert half / whole == pytest.approx(0.5, abs=0.01)

    # The checkpoint: the optimizer state in one shard file per rank (torch.distributed.checkpoint), and the whole
    # model in model.safetensors, which genesis-model alone loads and generates from.
    checkpoint = root / "fsdp" / "checkpoints" / "step-00000006"
    assert sorted(p.name for p in (checkpoint / "optimizer").iterdir()) == [".metadata", "__0_0.distcp",
                                                                             "__1_0.distcp"]
    model = load_pretrained(checkpoint)
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    tokenizer = GenesisTokenizer.from_file(checkpoint / "tokenizer.json")
    new = generate(model, [tokenizer.encode("In the beginning")], 8)[0]
    assert len(new) == 8 and all(0 <= token < tokenizer.vocab_size for token in new)


def test_a_sharded_run_resumed_reproduces_its_own_numbers_and_refuses_to_lose_its_shards(sharded):
    root, _ = sharded
    run_dir = root / "fsdp"
    first = logged(run_dir)
    (run_dir / "checkpoints" / "step-00000006").rename(root / "fsdp-step-6-aside")
    resumed = genesis_train([*RUN, *MEASURED, "--cache-dir", str(root / "cache"), "--out-dir", str(run_dir),
                             "--resume", "--fsdp"], ranks=2)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_same_numbers(logged(run_dir), first, rel=1e-6)

    refused = genesis_train([*RUN, "--cache-dir", str(root / "cache"), "--out-dir", str(run_dir), "--resume"],
                            ranks=2, timeout=120)
    assert refused.returncode != 0
    assert (f"genesis-train: error: --resume: {run_dir / 'checkpoints' / 'step-00000006'} was trained with --fsdp; "
            f"resume it with --fsdp") in refused.stderr


def test_fsdp_without_torchrun_is_refused_in_one_line(tmp_path):
    result = genesis_train([*RUN, "--out-dir", str(tmp_path / "run"), "--fsdp"], timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("genesis-train: error: --fsdp shards the model across processes: run under "
                                     "torchrun --nproc_per_node N (N >= 2), or leave --fsdp out")
    assert not (tmp_path / "run").exists()


def test_a_bad_option_stops_every_rank_with_one_message(tmp_path):
    result = genesis_train([*RUN, "--out-dir", str(tmp_path / "none"), "--resume"], ranks=2, timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert output.count("genesis-train: error: --resume:") == 1, output
    assert "[rank 1] genesis-train: stopping: another process of this run failed" in output
    # The one traceback is torchrun's own report of a failed child (ChildFailedError), none from genesis-train.
    assert output.count("Traceback (most recent call last)") == 1 and "ChildFailedError" in output


def test_a_failure_on_rank_0_mid_run_stops_rank_1(runs, tmp_path):
    """Rank 0's disk fills at its first checkpoint: rank 0 reports it, rank 1 (waiting in a collective) stops too
    instead of hanging."""
    root, _ = runs
    result = genesis_train([*RUN, "--cache-dir", str(root / "cache"), "--out-dir", str(tmp_path / "run")], ranks=2,
                           script=[str(HERE / "failing_rank.py")], timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "genesis-train: error: disk full while writing" in output, output
    assert "[rank 1] genesis-train: stopping: another process of this run failed" in output, output
    assert output.count("Traceback (most recent call last)") == 1 and "ChildFailedError" in output


def rank_processes(launcher: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of a torchrun launcher's worker processes (Linux: read from /proc)."""
    ranks = {}
    for task in Path("/proc").glob("[0-9]*"):
        try:
            if int((task / "stat").read_text().split(") ")[1].split()[1]) != launcher.pid:
                continue
            environ = dict(item.split("=", 1) for item in (task / "environ").read_text().split("\0") if "=" in item)
        except (OSError, IndexError, ValueError):
            continue
        if "RANK" in environ:
            ranks[int(environ["RANK"])] = int(task.name)
    return ranks


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_with_one_checkpoint(runs, tmp_path):
    root, _ = runs
    run_dir = tmp_path / "run"
    args = [*RUN, "--steps", "400", "--checkpoint-interval", "1000", "--eval-interval", "1000",
            "--cache-dir", str(root / "cache"), "--out-dir", str(run_dir)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "genesis_train", *args]
    env = {**os.environ, "GENESIS_KERNELS_BACKEND": "torch", "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("loss_lm") >= 3):
            assert time.monotonic() < deadline and launcher.poll() is None, "the run did not start training"
            time.sleep(0.2)
        os.kill(rank_processes(launcher)[1], signal.SIGTERM)  # rank 1 only, as a scheduler might
        output, _ = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    step = int(re.search(r"interrupted by a signal to another rank after step (\d+): checkpoint (\S+) written",
                         output).group(1))
    assert 3 <= step < 400, output
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [f"step-{step:08d}"]
    assert output.count("Traceback (most recent call last)") == 1 and "ChildFailedError" in output  # torchrun's

