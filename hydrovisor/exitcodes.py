"""Process exit codes (systemd restarts on 2 and 10, not on 0 and 77)."""

OK = 0
RECOVERABLE = 2
CRITICAL = 10
CONFIG = 77
