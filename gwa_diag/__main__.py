"""``python -m gwa_diag`` (also under torchrun): the same CLI as ``gwa-diag``."""

import sys

from gwa_diag.cli import main

sys.exit(main())
