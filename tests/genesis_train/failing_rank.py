"""genesis-train with rank 0's disk full at its first checkpoint (for test_distributed.py, under torchrun)."""

import errno
import os
import sys

from genesis_train.cli import main
from genesis_train.trainer import Trainer


def full_disk(self, name=None):
    raise OSError(errno.ENOSPC, "No space left on device", str(self.run_dir / "checkpoints"))


if os.environ.get("RANK") == "0":
    Trainer.save = full_disk
sys.exit(main())
