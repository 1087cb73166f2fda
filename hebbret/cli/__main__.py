"""``python -m hebbret.cli``: the ``hebbret`` command."""

import sys

from hebbret.cli import main

sys.exit(main())
