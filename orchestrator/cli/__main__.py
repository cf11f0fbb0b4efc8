"""``python -m orchestrator.cli``: the ``mutransfer`` command."""

import sys

from orchestrator.cli.main import main

sys.exit(main())
