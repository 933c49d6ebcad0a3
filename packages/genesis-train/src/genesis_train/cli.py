"""`genesis-train`: every TrainConfig field is an option; a TOML file (--config) sets defaults under them.
`genesis-train plot RUN_DIR` draws a run's metrics (genesis_train.plot)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from genesis_train.config import ConfigError, TrainConfig, build_config, fields_by_name


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
    try:
        cfg = build_config(toml_path, {k: v for k, v in args.items() if k in fields_by_name()})
        from genesis_train.allocator import retain_freed_memory
        from genesis_train.trainer import train  # heavy imports only once the options are known to be good

        retain_freed_memory()
        train(cfg)
    except ConfigError as e:
        print(f"genesis-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ngenesis-train: interrupted; the last complete checkpoint is kept (resume with --resume)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
