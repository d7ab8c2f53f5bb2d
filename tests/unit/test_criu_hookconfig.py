"""The CRIU hook's configuration file, and how the hook dispatches actions
before it touches anything (no daemon needed)."""
import os

import pytest

from keeptime.criu import hook, hookconfig
from keeptime.criu.hookconfig import ConfigError, HookConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def no_system_config(monkeypatch, tmp_path):
    monkeypatch.setattr(hookconfig, "DEFAULT_CONFIG", str(tmp_path / "absent.toml"))


def test_defaults_without_a_file():
    config = hookconfig.load({})
    assert config == HookConfig()
    assert (config.policy, config.on_daemon_unreachable, config.fail_on_regression) == ("suspend", "fail", True)


def test_the_shipped_example_is_valid_and_says_the_defaults():
    path = os.path.join(ROOT, "deploy", "criu", "criu-hook.toml")
    config = hookconfig.load({hookconfig.CONFIG_ENV: path})
    assert config == HookConfig(source=path)


def test_a_file_and_the_socket_precedence(tmp_path):
    path = tmp_path / "hook.toml"
    path.write_text('policy = "elapsed"\non_daemon_unreachable = "warn"\nfail_on_regression = false\n'
                    'socket = "/tmp/from-file.sock"\n')
    env = {hookconfig.CONFIG_ENV: str(path)}
    config = hookconfig.load(env)
    assert (config.policy, config.on_daemon_unreachable, config.fail_on_regression, config.socket) == (
        "elapsed", "warn", False, "/tmp/from-file.sock")
    assert hookconfig.load({**env, "KEEPTIME_SOCKET": "/tmp/env.sock"}).socket == "/tmp/env.sock"
    assert hookconfig.load({**env, "KEEPTIME_SOCKET": "/tmp/env.sock"}, "/tmp/flag.sock").socket == "/tmp/flag.sock"


@pytest.mark.parametrize("text, words", [
    ('polcy = "freeze"', "unknown key 'polcy'"),
    ('policy = "thaw"', "policy must be one of freeze, suspend, elapsed"),
    ('policy = 3', "policy must be a str"),
    ('fail_on_regression = "yes"', "fail_on_regression must be a bool"),
    ('on_daemon_unreachable = "ignore"', "must be one of fail, warn"),
    ('socket = ""', "must not be empty"),
    ('policy = ', "not valid TOML"),
    ('[criu]\npolicy = "freeze"', "unknown key 'criu'"),
])
def test_bad_files_are_one_line_errors(tmp_path, text, words):
    path = tmp_path / "hook.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as caught:
        hookconfig.load({hookconfig.CONFIG_ENV: str(path)})
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_a_named_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        hookconfig.load({hookconfig.CONFIG_ENV: str(tmp_path / "nope.toml")})


# Not this machine's keeptimed, if one runs: these tests are about the hook alone.
NO_DAEMON = {"KEEPTIME_SOCKET": "/nonexistent/keeptime.sock"}


def test_outside_criu_exits_2(capsys):
    assert hook.main({}) == 2
    assert "CRTOOLS_SCRIPT_ACTION is not set" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["pre-dump", "network-lock", "network-unlock", "setup-namespaces",
                                    "post-setup-namespaces", "orphan-pts-master", "pre-resume", "status-ready",
                                    "an-action-of-a-future-criu"])
def test_actions_keeptime_does_not_need_exit_0_silently(capsys, action):
    assert hook.main({"CRTOOLS_SCRIPT_ACTION": action}) == 0
    assert capsys.readouterr() == ("", "")


def test_a_bad_config_fails_the_handled_actions_with_2(tmp_path, capsys):
    path = tmp_path / "hook.toml"
    path.write_text("bogus = 1\n")
    env = {"CRTOOLS_SCRIPT_ACTION": "pre-restore", hookconfig.CONFIG_ENV: str(path), "CRTOOLS_IMAGE_DIR": "/",
           **NO_DAEMON}
    assert hook.main(env) == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize("env, words", [
    ({"CRTOOLS_SCRIPT_ACTION": "post-dump", "CRTOOLS_INIT_PID": "12"}, "CRTOOLS_IMAGE_DIR is not set"),
    ({"CRTOOLS_SCRIPT_ACTION": "post-dump", "CRTOOLS_IMAGE_DIR": "/"}, "CRTOOLS_INIT_PID must be"),
    ({"CRTOOLS_SCRIPT_ACTION": "post-restore", "CRTOOLS_IMAGE_DIR": "/", "CRTOOLS_INIT_PID": "-3"}, "got '-3'"),
])
def test_missing_criu_environment_exits_2(capsys, env, words):
    assert hook.main({**env, **NO_DAEMON}) == 2
    assert words in capsys.readouterr().err
