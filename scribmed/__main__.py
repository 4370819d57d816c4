"""``python -m scribmed`` is the ``scribmed`` command."""

import sys

from scribmed.cli import main

sys.exit(main())
