"""keeptimed's configuration: one flat TOML file, KEEPTIME_* environment
variables and command-line flags, all describing the same keys.

Precedence, highest first: flags > environment > file > embedded defaults.
Every key is declared once in SETTINGS; its flag (``--metrics-address``) and
environment variable (``KEEPTIME_METRICS_ADDRESS``) are derived from its name,
so a new key is one more Setting. Any problem is a ConfigError with a one-line
message naming where the bad value came from.
"""
import argparse
import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from keeptime.defaults import (
    CONFIG_ENV, DEFAULT_CONFIG, DEFAULT_DB, DEFAULT_POLICY, DEFAULT_SOCKET, POLICIES,
)

from .confine import LOSABLE, check_allow_lost, check_root_cgroup

ENV_PREFIX = "KEEPTIME_"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "text")


class ConfigError(Exception):
    """A bad configuration value, file or flag; the message is one line."""


def split_host_port(address: str) -> tuple[str, int]:
    """("HOST", PORT) from "HOST:PORT" or "[IPv6]:PORT"; an empty host means all
    interfaces. Raises ValueError with the reason."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError for a bad address
    elif ":" in host:
        raise ValueError(f"put an IPv6 address in brackets: [{host}]:{port}")
    return host, port


def _check_address(value: str) -> Optional[str]:
    if not value:
        return None  # off
    try:
        split_host_port(value)
    except ValueError as exc:
        return str(exc)
    return None


def _check_quick_workers(value: int) -> Optional[str]:
    # Root keeps a quarter of them, at least one, and the other callers at least one.
    return "must be 0 (auto) or at least 2" if value < 0 or value == 1 else None


def _check_path(value: str) -> Optional[str]:
    return "must not be empty" if not value else None


@dataclass(frozen=True)
class Setting:
    """One configuration key."""

    key: str
    kind: type                  # str, int, float, bool or list (of strings)
    default: Any
    help: str
    choices: tuple = ()
    minimum: Optional[float] = None
    check: Optional[Callable[[Any], Optional[str]]] = None   # returns the problem, if any
    path: bool = False          # made absolute (relative to the cwd, or to the file)

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("socket", str, DEFAULT_SOCKET, "unix socket to serve on (mode 0600)", check=_check_path, path=True),
    Setting("db", str, DEFAULT_DB, "SQLite record store", check=_check_path, path=True),
    Setting("default_policy", str, DEFAULT_POLICY, "policy used when a request names none", choices=POLICIES),
    Setting("workers", int, 32, "calls that may block served at once: wait, and streams (health watch, "
            "reflection)", minimum=1),
    Setting("quick_workers", int, 0, "every other call served at once (more wait their turn; one non-root uid holds "
            "at most half of the three quarters callers other than root may); 0: two per CPU, 4 to 32",
            check=_check_quick_workers),
    Setting("grace", float, 10.0, "seconds in-flight calls get to finish at shutdown", minimum=0),
    Setting("log_level", str, "info", "least severe log level written", choices=LOG_LEVELS),
    Setting("log_format", str, "auto", "json, text, or auto: json unless stderr is a terminal", choices=LOG_FORMATS),
    Setting("metrics_address", str, "", "HOST:PORT to serve Prometheus metrics on /metrics; empty: off",
            check=_check_address),
    Setting("socket_group", str, "", "let this group's members call keeptimed (socket mode 0660); they are "
            "confined to their own processes and uid, but reach a root daemon: grant it like the docker group"),
    Setting("allow_lost_confinement", list, [], "start a non-root caller's program even though keeptime cannot "
            f"give it this part of the caller's confinement ({', '.join(LOSABLE)}); it then runs without it "
            "(empty: refuse with PERMISSION_DENIED)", check=check_allow_lost),
    Setting("root_programs_cgroup", str, "caller", "the cgroup of programs root (and TLS clients) start: caller "
            "(the calling process's), keeptimed (its own) or a cgroup path such as /keeptime.slice",
            check=check_root_cgroup),
    Setting("tcp", str, "", "also listen on TCP HOST:PORT for migration tooling, with mutual TLS; empty: off",
            check=_check_address),
    Setting("tls_cert", str, "", "server certificate (PEM) for tcp", path=True),
    Setting("tls_key", str, "", "server private key (PEM) for tcp", path=True),
    Setting("tls_client_ca", str, "", "CA (PEM) that signs accepted client certificates", path=True),
    Setting("tls_allow_name", list, [], "accept only client certificates with one of these DNS subject "
            "alternative names (never a common name, email or URI; flag repeatable, environment "
            "comma-separated; empty: any the CA signed)"),
    Setting("insecure_loopback", bool, False, "allow tcp without TLS on a loopback address (any local user "
            "becomes root-equivalent: test rigs only)"),
    # Limits on callers other than root (socket_group members), so that none
    # of them can starve root or each other; see keeptimed.limits.
    Setting("root_workers", int, 8, "workers only root may use: callers other than root together hold at "
            "most workers - root_workers (at least 1)", minimum=0),
    Setting("user_calls", int, 8, "calls (streams and CRIU hook steps included) one non-root uid may have "
            "in progress at once", minimum=1),
    Setting("user_waits", int, 4, "Wait calls one non-root uid may have blocked at once", minimum=1),
    Setting("user_processes", int, 1024, "processes keeptimed started (restore, exec) for one non-root uid "
            "that may run at once", minimum=1),
    Setting("user_records", int, 10_000, "records one non-root uid may keep in the store", minimum=1),
    Setting("user_store_bytes", int, 64 * 1024 * 1024, "bytes of records one non-root uid may keep in the "
            "store", minimum=1),
    Setting("user_restores", int, 10_000, "restore verdicts kept per non-root uid; beyond, its oldest are "
            "dropped", minimum=1),
    Setting("root_store_reserve", int, 64 * 1024 * 1024, "bytes of free space on the store's file system "
            "that only root's writes may use", minimum=0),
    Setting("exec_timeout", float, 10.0, "seconds a started program has from its creation to its exec; "
            "one stopped or blocked longer is killed and its restore or exec fails", minimum=0.1),
    Setting("pid_file", str, "", "write keeptimed's pid to this file once it serves; removed when it stops "
            "cleanly; empty: none", path=True),
)
BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    """The effective configuration: values by key, and where each came from."""

    values: dict
    sources: dict               # key -> "default", "file", "env KEEPTIME_X" or "flag --x"
    path: str                   # the configuration file considered
    file_loaded: bool           # False when the (default) file does not exist

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None

    def to_toml(self) -> str:
        """The configuration as a TOML document that loads back to the same values."""
        state = "" if self.file_loaded else " (not present)"
        lines = [
            "# keeptimed effective configuration",
            f"# file: {self.path}{state}; precedence: flags > KEEPTIME_* environment > file > defaults",
        ]
        for setting in SETTINGS:
            lines.append(f"{setting.key} = {toml_value(self.values[setting.key])}  # {self.sources[setting.key]}")
        return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A value as TOML (JSON strings and arrays of strings are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def _validate(setting: Setting, value: Any, where: str) -> Any:
    """Check a typed value against its setting; returns it normalized."""
    if setting.choices:
        if setting.key == "log_level":
            value = value.lower()
        if value not in setting.choices:
            raise ConfigError(f"{where}: {setting.key} must be one of {', '.join(setting.choices)}, got {value!r}")
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(f"{where}: {setting.key} must be at least {setting.minimum:g}, got {value!r}")
    if setting.check is not None:
        problem = setting.check(value)
        if problem:
            raise ConfigError(f"{where}: {setting.key}: {problem}")
    return value


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list of strings"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _from_file(setting: Setting, value: Any, where: str) -> Any:
    """A value as TOML typed it: the type must match (an integer is a fine float)."""
    ok = isinstance(value, setting.kind) and not (setting.kind is not bool and isinstance(value, bool))
    if setting.kind is list:
        ok = ok and all(isinstance(item, str) for item in value)
    if setting.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{where}: {setting.key} must be {_KIND_NAMES[setting.kind]}, got {toml_value(value)}")
    return value


def from_text(setting: Setting, text: str, where: str) -> Any:
    """A value given as text (environment or flag), converted to its kind."""
    if setting.kind is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    try:
        if setting.kind is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(text)
        return setting.kind(text)
    except ValueError:
        raise ConfigError(f"{where}: {setting.key} must be {_KIND_NAMES[setting.kind]}, got {text!r}") from None


def read_file(path: str) -> dict:
    """The keys of a TOML configuration file; unknown keys and tables are errors."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    values = {}
    for key, value in data.items():
        if key not in BY_KEY:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(BY_KEY)})")
        setting = BY_KEY[key]
        value = _from_file(setting, value, path)
        if setting.path and not os.path.isabs(value) and value:
            value = os.path.join(os.path.dirname(os.path.abspath(path)), value)
        values[key] = value
    return values


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; absent flags leave no attribute (default SUPPRESS)."""
    for s in SETTINGS:
        default = "none" if s.default in ("", []) else s.default
        help_text = f"{s.help} (env {s.env}; default {default})"
        if s.kind is bool:
            parser.add_argument(s.flag, dest=s.key, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        elif s.kind is list:
            parser.add_argument(s.flag, dest=s.key, action="append", default=argparse.SUPPRESS,
                                metavar=s.key.upper(), help=help_text)
        else:
            parser.add_argument(s.flag, dest=s.key, default=argparse.SUPPRESS, metavar=s.key.upper(),
                                help=help_text)


def config_path(flag: Optional[str], environ: Mapping[str, str]) -> tuple[str, bool]:
    """(absolute path, explicit): --config, else KEEPTIME_CONFIG, else the
    default file. Absolute, because GetInfo reports it to callers (doctor)
    whose working directory differs."""
    if flag:
        return os.path.abspath(flag), True
    if environ.get(CONFIG_ENV):
        return os.path.abspath(environ[CONFIG_ENV]), True
    return DEFAULT_CONFIG, False


def load(flags: Mapping[str, Any], environ: Mapping[str, str], path: str, explicit: bool) -> Config:
    """The effective configuration. flags holds only the flags given, as text
    (or bool); a missing file is an error only when it was named explicitly."""
    values = {s.key: list(s.default) if s.kind is list else s.default for s in SETTINGS}
    sources = {s.key: "default" for s in SETTINGS}
    file_loaded = os.path.exists(path)
    if explicit and not file_loaded:
        raise ConfigError(f"configuration file {path} does not exist")
    if file_loaded:
        for key, value in read_file(path).items():
            values[key] = _validate(BY_KEY[key], value, path)
            sources[key] = "file"
    for s in SETTINGS:
        if s.env in environ:
            values[s.key] = _validate(s, from_text(s, environ[s.env], s.env), s.env)
            if s.path and values[s.key]:
                values[s.key] = os.path.abspath(values[s.key])
            sources[s.key] = f"env {s.env}"
        if s.key in flags:
            raw = flags[s.key]
            value = raw if isinstance(raw, (bool, list)) else from_text(s, raw, s.flag)
            values[s.key] = _validate(s, value, s.flag)
            if s.path and values[s.key]:
                values[s.key] = os.path.abspath(values[s.key])
            sources[s.key] = f"flag {s.flag}"
    return Config(values=values, sources=sources, path=path, file_loaded=file_loaded)
