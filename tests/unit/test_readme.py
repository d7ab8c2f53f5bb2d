"""The README's operator sections stay in step with the code: every
configuration key, metric and CLI command is documented where an operator
looks for it."""
import os
import re

import pytest

from keeptime import cli
from keeptimed import config, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read(*path: str) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def section(title: str) -> str:
    """The README's "## title" section, up to the next one."""
    text = read("README.md")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


@pytest.mark.parametrize("setting", config.SETTINGS, ids=lambda s: s.key)
def test_every_configuration_key_is_in_the_table(setting):
    row = next(line for line in section("Operating").splitlines() if line.startswith(f"| `{setting.key}` |"))
    assert f"`{setting.flag}`" in row and f"`{setting.env}`" in row


def test_every_metric_is_documented():
    served = set(metrics.KeeptimeMetrics("0").registry.names())
    served |= set(re.findall(r'add_gauge\("(keeptime_\w+)"', read("daemon", "keeptimed", "server.py")))
    documented = set(re.findall(r"`(keeptime_\w+)`", section("Operating")))
    assert served and served == documented


def test_every_command_is_documented():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    text = read("README.md")
    assert [name for name in commands if f"**{name}**" not in text] == []
