"""`genesis-train`: every TrainConfig field is an option; a TOML file (--config) sets defaults under them.
`genesis-train plot RUN_DIR` draws a run's metrics (genesis_train.plot)."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys

from genesis_train.config import (
    ConfigError,
    TrainConfig,
    TrainingError,
    build_config,
    check_writable_dirs,
    fields_by_name,
)
from genesis_train.interrupt import Interrupted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genesis-train",
        description="Train a Genesis (Micro-Llama) model on Bible text. Precedence: defaults < --config TOML < "
                    "command-line options. Without --bible-dir or --text-file the built-in public-domain corpus "
                    "(ASV, KJV, WEB from the pythonbible packages) is used, offline. "
                    "`genesis-train plot RUN_DIR` writes RUN_DIR/plot.png from the run's metrics.",
    )
    parser.add_argument("--config", metavar="TOML", help="TOML file of options (e.g. configs/cpu.toml)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default) if f.default is not None else str
        # default=None here so that only options actually given override the TOML file.
        kwargs = {"help": f"{f.metadata['help']} (default: {f.default})", "default": None, "dest": f.name}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            # A field with a `const` may be given bare (--tensorboard, --concepts) to mean that value.
            bare = {"nargs": "?", "const": f.metadata["const"]} if "const" in f.metadata else {}
            parser.add_argument(flag, type=kind, metavar=f.name.upper(), choices=f.metadata.get("choices"),
                                **bare, **kwargs)
    return parser


def main(argv: list[str] | None = None) -> int:
    status = run(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun, leave without tearing down: after a failure the process group was not closed, and
        # freeing the DDP reducer runs gloo's process-group destructor, which can deadlock with a gloo worker
        # thread that waits for the GIL (Distributed.close). Every file is written and closed by now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def run(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot"]:
        from genesis_train.plot import main as plot_main

        return plot_main(argv[1:])
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    toml_path = args.pop("config")
    cfg = None
    try:
        cfg = build_config(toml_path, {k: v for k, v in args.items() if k in fields_by_name()})
        check_writable_dirs(cfg)
        from genesis_train.allocator import retain_freed_memory
        from genesis_train.trainer import train  # heavy imports only once the options are known to be good

        retain_freed_memory()
        train(cfg)
    except ConfigError as e:
        report(f"genesis-train: error: {e}")
        return 2
    except TrainingError as e:
        report(f"genesis-train: error: {e}")
        return 1
    except OSError as e:
        message = storage_error_message(e, cfg)
        if message is None:
            raise
        report(f"genesis-train: error: {message}", every_rank=True)
        return 1
    except Interrupted as e:
        report(f"genesis-train: {e}")
        return e.exit_status
    except KeyboardInterrupt:  # before training began, or a second Ctrl-C
        report(f"\ngenesis-train: interrupted; {kept_checkpoint(cfg)}")
        return 130
    except Exception as e:
        # Under torchrun, a rank whose peer failed (it reports why) stops here, in one line, instead of repeating
        # that failure as a traceback of the broken collective.
        if not peer_failure(e):
            raise
        report(f"genesis-train: stopping: another process of this run failed (its "
               f"message says why)", every_rank=True)
        return 1
    return 0


def report(line: str, every_rank: bool = False) -> None:
    """A message for the user on stderr. Under torchrun every rank meets the same bad option or the same signal:
    rank 0 alone says so, unless the failure may be this rank's own."""
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0 and not every_rank:
        return
    # One write, so that the lines of several ranks on one terminal do not run into each other.
    sys.stderr.write(f"{line if rank == 0 else f'[rank {rank}] {line}'}\n")
    sys.stderr.flush()


def peer_failure(error: Exception) -> bool:
    """Whether `error` means another rank of a torchrun job stopped: its failure reached this one through a
    collective (gloo: the connection closed; NCCL: the communicator aborted), or it failed before a shared phase."""
    from genesis_train.distributed import PeerFailed

    if isinstance(error, PeerFailed):
        return True
    if "WORLD_SIZE" not in os.environ:
        return False
    import torch.distributed as dist

    return isinstance(error, dist.DistError) or "Connection closed by peer" in str(error)


def kept_checkpoint(cfg: TrainConfig | None) -> str:
    """What an interrupted run leaves to continue from."""
    from genesis_train.checkpointing import latest_checkpoint

    latest = latest_checkpoint(cfg.run_dir) if cfg is not None else None
    return f"checkpoint {latest} is kept (continue with --resume)" if latest else "no checkpoint was written"


def storage_error_message(error: OSError, cfg: TrainConfig | None) -> str | None:
    """One line for what the machine's storage refused mid-run (full disk, permissions, a read-only file system),
    naming the path; None for any other OSError, which keeps its traceback."""
    if error.filename is not None:
        where = os.fsdecode(error.filename) if isinstance(error.filename, (str, bytes)) else str(error.filename)
    else:  # a write to an open file: the path is not known here, the run directory is where runs write
        where = f"under {cfg.run_dir}" if cfg is not None else "a file"
    if error.errno == errno.ENOSPC:
        return f"disk full while writing {where} (free space or choose another --out-dir)"
    if error.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {where} (free space or choose another --out-dir)"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {where} (fix its permissions or choose another --out-dir / --cache-dir)"
    if error.errno == errno.EROFS:
        return f"read-only file system while writing {where} (choose another --out-dir / --cache-dir)"
    return None


if __name__ == "__main__":
    sys.exit(main())
