"""`python -m consent_ivr.cli.main`: the command line."""

import sys

from consent_ivr.cli.main import main

sys.exit(main())
