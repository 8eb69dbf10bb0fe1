"""tests/bench holds benchmark scripts run by hand (see benchlib.py); pytest must not collect or
import any of them."""

collect_ignore_glob = ["*.py"]
