"""``python -m consumer.promoter [run | status | export --out FILE]``."""

import sys

from consumer.promoter.cli import main

sys.exit(main())
