"""``python -m dmir`` — the dmir command line (see :mod:`dmir.cli`)."""
import sys

from .cli import main

sys.exit(main())
