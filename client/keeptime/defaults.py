"""Embedded defaults shared by the daemon and its callers."""

SOCKET_ENV = "KEEPTIME_SOCKET"
DB_ENV = "KEEPTIME_DB"
DEFAULT_SOCKET = "/run/keeptime/keeptime.sock"
DEFAULT_DB = "/var/lib/keeptime/keeptime.db"
POLICIES = ("freeze", "suspend", "elapsed")
DEFAULT_POLICY = "suspend"
CONFIG_ENV = "KEEPTIME_CONFIG"
DEFAULT_CONFIG = "/etc/keeptime/keeptimed.toml"
# The record file the CRIU hook writes into an image directory at post-dump.
CRIU_RECORD_FILE = "keeptime-record.bin"
