"""`python -m ditlens.cli` (as torchrun starts a sweep: `torchrun -m ditlens.cli sweep study.toml`)."""

import sys

from . import main

sys.exit(main())
