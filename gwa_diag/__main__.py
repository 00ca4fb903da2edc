"""``python -m gwa_diag`` (also under torchrun): the same CLI as ``gwa-diag``."""

import sys

from .cli import main

sys.exit(main())
