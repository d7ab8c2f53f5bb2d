"""The CRIU hook's configuration: a small TOML file, every key optional.

    # /etc/keeptime/criu-hook.toml (or $KEEPTIME_CRIU_HOOK_CONFIG)
    policy = "suspend"              # freeze | suspend | elapsed
    on_daemon_unreachable = "fail"  # fail | warn (at pre-restore: let CRIU freeze)
    fail_on_regression = true       # post-restore exits non-zero on regressed clocks
    fail_on_unverified = true       # ... and when keeptime could not verify them
    socket = "/run/keeptime/keeptime.sock"   # KEEPTIME_SOCKET wins when set

A missing default file means the defaults; a file named by the environment
must exist. Unknown keys and wrong types are errors, so a typo never
silently changes what a restore does. The hook opens the file with its own
privileges and keeptimed reads it from that descriptor.
"""
import os
import tomllib
from dataclasses import dataclass, replace
from typing import Mapping, Optional

from ..defaults import DEFAULT_POLICY, DEFAULT_SOCKET, POLICIES, SOCKET_ENV

CONFIG_ENV = "KEEPTIME_CRIU_HOOK_CONFIG"
DEFAULT_CONFIG = "/etc/keeptime/criu-hook.toml"
FAIL, WARN = "fail", "warn"


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line."""


@dataclass(frozen=True)
class HookConfig:
    policy: str = DEFAULT_POLICY
    on_daemon_unreachable: str = FAIL
    fail_on_regression: bool = True
    fail_on_unverified: bool = True
    socket: str = DEFAULT_SOCKET
    source: str = "built-in defaults"


_CHOICES = {"policy": POLICIES, "on_daemon_unreachable": (FAIL, WARN)}
_TYPES = {"policy": str, "on_daemon_unreachable": str, "fail_on_regression": bool, "fail_on_unverified": bool,
          "socket": str}
MAX_CONFIG_BYTES = 64 * 1024


def parse(text: str, source: str) -> dict:
    """The settings in a configuration file's text, validated."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    for key, value in data.items():
        if key not in _TYPES:
            raise ConfigError(f"{source}: unknown key {key!r}; known keys: {', '.join(_TYPES)}")
        if not isinstance(value, _TYPES[key]):
            raise ConfigError(f"{source}: {key} must be a {_TYPES[key].__name__}, got {value!r}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{source}: {key} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
        if key == "socket" and not value:
            raise ConfigError(f"{source}: socket must not be empty")
    return data


def from_bytes(raw: Optional[bytes], path: str) -> HookConfig:
    """The configuration in a file's bytes (None: no file, the defaults)."""
    if raw is None:
        return HookConfig()
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return HookConfig(**parse(text, path), source=path)


def config_path(environ: Mapping[str, str]) -> tuple[str, bool]:
    """(the configuration file for this run, whether the environment named it)."""
    named = environ.get(CONFIG_ENV)
    return (named, True) if named else (DEFAULT_CONFIG, False)


def missing_named_config(path: str) -> ConfigError:
    """The error for a file named by the environment that is not there."""
    return ConfigError(f"{path} (from {CONFIG_ENV}) does not exist")


def load(environ: Mapping[str, str], socket_override: Optional[str] = None) -> HookConfig:
    """The configuration for this run: file, then KEEPTIME_SOCKET, then an explicit socket."""
    path, named = config_path(environ)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if named:
            raise missing_named_config(path) from None
        raw = None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    config = from_bytes(raw, path)
    socket = socket_override or environ.get(SOCKET_ENV)
    if socket:
        config = replace(config, socket=socket)
    return replace(config, socket=os.path.abspath(config.socket))
