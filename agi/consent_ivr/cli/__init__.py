"""The `consent-ivr` command line: thin glue over the library, one module per group of commands."""
