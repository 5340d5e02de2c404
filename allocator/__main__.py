"""``python -m allocator``: the same as the ``allocator`` console command."""

import sys

from allocator import main

sys.exit(main())
