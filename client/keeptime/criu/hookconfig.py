"""The CRIU hook's configuration: a small TOML file, every key optional.

    # /etc/keeptime/criu-hook.toml (or $KEEPTIME_CRIU_HOOK_CONFIG)
    policy = "suspend"              # freeze | suspend | elapsed
    on_daemon_unreachable = "fail"  # fail | warn (at pre-restore: let CRIU freeze)
    fail_on_regression = true       # post-restore exits non-zero on regressed clocks
    socket = "/run/keeptime/keeptime.sock"   # KEEPTIME_SOCKET wins when set

A missing default file means the defaults; a file named by the environment
must exist. Unknown keys and wrong types are errors, so a typo never
silently changes what a restore does.
"""
import os
import tomllib
from dataclasses import dataclass
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
    socket: str = DEFAULT_SOCKET
    source: str = "built-in defaults"


_CHOICES = {"policy": POLICIES, "on_daemon_unreachable": (FAIL, WARN)}
_TYPES = {"policy": str, "on_daemon_unreachable": str, "fail_on_regression": bool, "socket": str}


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


def load(environ: Mapping[str, str], socket_override: Optional[str] = None) -> HookConfig:
    """The configuration for this run: file, then KEEPTIME_SOCKET, then an explicit socket."""
    path = environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if environ.get(CONFIG_ENV):
            raise ConfigError(f"{path} (from {CONFIG_ENV}) does not exist") from None
        raw, path = None, ""
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    settings: dict = {}
    if raw is not None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        settings = parse(text, path)
        settings["source"] = path
    socket = socket_override or environ.get(SOCKET_ENV)
    if socket:
        settings["socket"] = socket
    if "socket" in settings:
        settings["socket"] = os.path.abspath(settings["socket"])
    return HookConfig(**settings)
