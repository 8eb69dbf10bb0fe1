"""The AGI protocol, sans I/O: the wire codec and the session that turns engine actions into AGI
commands."""
