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
        print(f"genesis-train: error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"genesis-train: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        message = storage_error_message(e, cfg)
        if message is None:
            raise
        print(f"genesis-train: error: {message}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"genesis-train: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:  # before training began, or a second Ctrl-C
        print(f"\ngenesis-train: interrupted; {kept_checkpoint(cfg)}", file=sys.stderr)
        return 130
    return 0


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
