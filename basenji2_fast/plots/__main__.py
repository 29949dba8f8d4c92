"""``python -m basenji2_fast.plots plot|sat-plot ...``: the picture commands without the package CLI."""
import sys

from . import main

sys.exit(main())
