"""The README's operator sections stay in step with the code: every
configuration key, metric and CLI command is documented where an operator
looks for it; every code block is run by a test or says why it cannot be
(tests/helpers/readme.py, tests/integration/test_readme_examples.py); the
set-up is exactly what CI runs."""
import os
import re

import pytest

from helpers import readme
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


def test_every_code_block_is_run_by_a_test_or_says_why_not():
    with open(os.path.join(ROOT, "tests", "integration", "test_readme_examples.py"), encoding="utf-8") as f:
        runners = set(re.findall(r"^def (test_\w+)", f.read(), re.M))
    for block in readme.blocks():
        how = readme.check_of(block)
        if how.startswith("run by "):
            assert how.removeprefix("run by ") in runners, (block.line, how)
        else:
            assert how.startswith("not run by a test"), (block.line, how)
    assert all(any(b.first.startswith(key) for b in readme.blocks()) for key in readme.CHECKS), \
        "CHECKS lists a block the README no longer has"


def test_the_set_up_is_what_ci_runs():
    """The README's two set-up commands, as root on a fresh Debian machine, are .ci/run's."""
    commands = [line.split("#")[0].strip() for line in readme.block("deploy/install.sh   #").text.splitlines()]
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = [line.strip() for line in f if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == [f"bash {command}" for command in commands] == ["bash deploy/install.sh", "bash tests/run.sh"]
