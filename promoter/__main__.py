"""``python -m promoter [run | status | export --out FILE]``."""

import sys

from promoter.cli import main

sys.exit(main())
