"""The `consent-ivr` command line: thin glue over the library, one module per group of commands.

Before the command's modules are imported (half a second), a live call (`simulate
--interactive`) stops the terminal echoing keys typed meanwhile: `typeahead.hold_early`.
"""

import sys

from consent_ivr.cli import typeahead

typeahead.hold_early(sys.argv)
