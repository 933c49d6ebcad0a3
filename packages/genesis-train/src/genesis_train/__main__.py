"""`python -m genesis_train` (and `torchrun -m genesis_train`): the genesis-train command."""

import sys

from genesis_train.cli import main

sys.exit(main())
