"""keeptimed's configuration: file, environment and flags, their precedence,
and one-line errors with exit status 2 for anything bad."""
import os
import subprocess
import sys
import tomllib

import pytest

from keeptimed import config, main


def keeptimed(*args, env=None):
    """Run keeptimed's command line (nothing here starts a server)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEEPTIME_")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "keeptimed", *args], capture_output=True, text=True,
                          env=environ, timeout=60)


def one_line_error(result, *words):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def write(tmp_path, text, name="keeptimed.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_precedence_is_flags_then_environment_then_file_then_defaults(tmp_path):
    path = write(tmp_path, 'workers = 4\ngrace = 3\ndefault_policy = "freeze"\nlog_level = "DEBUG"\n')
    env = {"KEEPTIME_GRACE": "7.5", "KEEPTIME_DEFAULT_POLICY": "elapsed"}
    _, cfg = main.load_config(["--config", path, "--default-policy", "suspend"], env)
    assert cfg.workers == 4 and cfg.sources["workers"] == "file"
    assert cfg.grace == 7.5 and cfg.sources["grace"] == "env KEEPTIME_GRACE"
    assert cfg.default_policy == "suspend" and cfg.sources["default_policy"] == "flag --default-policy"
    assert cfg.log_level == "debug"
    assert cfg.db == config.BY_KEY["db"].default and cfg.sources["db"] == "default"
    assert cfg.path == path and cfg.file_loaded


def test_the_historic_socket_and_db_environment_still_work(tmp_path):
    env = {"KEEPTIME_SOCKET": str(tmp_path / "s.sock"), "KEEPTIME_DB": "rel.db",
           "KEEPTIME_CONFIG": write(tmp_path, "")}
    _, cfg = main.load_config([], env)
    assert cfg.socket == str(tmp_path / "s.sock")
    assert cfg.db == os.path.abspath("rel.db")


def test_a_relative_configuration_path_is_reported_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "workers = 2\n")
    _, cfg = main.load_config(["--config", "keeptimed.toml"], {})
    assert cfg.path == str(tmp_path / "keeptimed.toml") and cfg.workers == 2


def test_a_missing_default_file_is_fine_but_a_named_one_is_not(tmp_path):
    missing = str(tmp_path / "absent.toml")
    cfg = config.load({}, {}, missing, explicit=False)
    assert not cfg.file_loaded and cfg.workers == 32
    one_line_error(keeptimed("--config", missing, "--print-config"), "absent.toml does not exist")
    one_line_error(keeptimed("--print-config", env={"KEEPTIME_CONFIG": missing}), "does not exist")


def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path):
    path = write(tmp_path, 'socket = "run/k.sock"\n')
    _, cfg = main.load_config(["--config", path], {})
    assert cfg.socket == str(tmp_path / "run" / "k.sock")


@pytest.mark.parametrize("text, words", [
    ('sockt = "/x"\n', ["unknown key 'sockt'", "known: socket, db"]),
    ('[server]\nsocket = "/x"\n', ["unknown key 'server'"]),
    ('workers = "8"\n', ['workers must be an integer, got "8"']),
    ('workers = true\n', ["workers must be an integer, got true"]),
    ('workers = 0\n', ["workers must be at least 1"]),
    ('quick_workers = 1\n', ["quick_workers: must be 0 (auto) or at least 2"]),
    ('grace = "soon"\n', ["grace must be a number"]),
    ('default_policy = "thaw"\n', ["default_policy must be one of freeze, suspend, elapsed"]),
    ('log_format = "xml"\n', ["log_format must be one of auto, json, text"]),
    ('metrics_address = "localhost"\n', ["metrics_address: expected HOST:PORT"]),
    ('metrics_address = "::1:9540"\n', ["put an IPv6 address in brackets"]),
    ('socket = ""\n', ["socket: must not be empty"]),
    ('allow_lost_confinement = ["seccomp", "apparmor"]\n', ["allow_lost_confinement: unknown 'apparmor'",
                                                            "known: seccomp, user-namespace, lsm, loginuid, cgroup"]),
    ('root_programs_cgroup = "keeptime.slice"\n', ["root_programs_cgroup: must be 'caller', 'keeptimed' or an "
                                                    "absolute cgroup path"]),
    ('root_programs_cgroup = "/a/../b"\n', ["root_programs_cgroup: must be"]),
    ('workers = 4\nworkers = 5\n', ["invalid TOML"]),
    ('workers = \n', ["invalid TOML"]),
])
def test_bad_files_are_one_line_errors_with_exit_2(tmp_path, text, words):
    path = write(tmp_path, text)
    one_line_error(keeptimed("--config", path, "--print-config"), path, *words)


@pytest.mark.parametrize("args, env, words", [
    (["--workers", "many"], {}, ["--workers: workers must be an integer, got 'many'"]),
    (["--grace", "-1"], {}, ["grace must be at least 0"]),
    (["--metrics-address", "127.0.0.1:99999"], {}, ["port 99999 is out of range"]),
    (["--frobnicate"], {}, ["unrecognized arguments: --frobnicate"]),
    ([], {"KEEPTIME_WORKERS": "x"}, ["KEEPTIME_WORKERS: workers must be an integer"]),
    ([], {"KEEPTIME_LOG_LEVEL": "loud"}, ["KEEPTIME_LOG_LEVEL: log_level must be one of"]),
    (["--allow-lost-confinement", "selinux"], {}, ["--allow-lost-confinement: allow_lost_confinement: unknown"]),
])
def test_bad_flags_and_environment_are_one_line_errors_with_exit_2(args, env, words):
    one_line_error(keeptimed(*args, "--print-config", env=env), *words)


def test_print_config_is_toml_that_loads_back_to_the_same_configuration(tmp_path):
    path = write(tmp_path, 'workers = 3\nmetrics_address = "[::1]:9540"\n')
    printed = keeptimed("--config", path, "--grace", "2", "--print-config",
                        env={"KEEPTIME_LOG_FORMAT": "json"})
    assert printed.returncode == 0, printed.stderr
    values = tomllib.loads(printed.stdout)
    assert values == {
        "socket": config.BY_KEY["socket"].default, "db": config.BY_KEY["db"].default,
        "default_policy": "suspend", "workers": 3, "quick_workers": 0, "grace": 2.0, "log_level": "info",
        "log_format": "json", "metrics_address": "[::1]:9540", "socket_group": "", "allow_lost_confinement": [],
        "root_programs_cgroup": "caller", "tcp": "",
        "tls_cert": "", "tls_key": "", "tls_client_ca": "", "tls_allow_name": [], "insecure_loopback": False,
        "root_workers": 8, "user_calls": 8, "user_waits": 4, "user_processes": 1024, "user_records": 10_000,
        "user_store_bytes": 64 * 1024 * 1024, "user_restores": 10_000, "root_store_reserve": 64 * 1024 * 1024,
        "exec_timeout": 10.0,
        "pid_file": "",
    }
    assert "workers = 3  # file" in printed.stdout and "grace = 2.0  # flag --grace" in printed.stdout
    again = keeptimed("--config", write(tmp_path, printed.stdout, "printed.toml"), "--print-config")
    assert tomllib.loads(again.stdout) == values


def test_the_example_file_documents_every_key_with_its_default():
    """deploy/keeptimed.toml (installed to /etc/keeptime) stays in step with SETTINGS."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "deploy", "keeptimed.toml"), encoding="utf-8") as f:
        text = f.read()
    assert tomllib.loads(text) == {}  # everything commented out: the defaults apply
    uncommented = "\n".join(line[2:] for line in text.splitlines() if line.startswith("# ") and " = " in line)
    assert tomllib.loads(uncommented) == {s.key: s.default for s in config.SETTINGS}


def test_a_list_setting_from_file_environment_and_repeated_flags(tmp_path):
    path = write(tmp_path, 'tls_allow_name = ["migrator", "backup"]\ninsecure_loopback = true\n')
    _, from_file = main.load_config(["--config", path], {})
    assert from_file.tls_allow_name == ["migrator", "backup"] and from_file.insecure_loopback is True
    _, from_env = main.load_config(["--config", path], {"KEEPTIME_TLS_ALLOW_NAME": "a, b,"})
    assert from_env.tls_allow_name == ["a", "b"]
    _, from_flags = main.load_config(["--config", path, "--tls-allow-name", "x", "--tls-allow-name", "y",
                                      "--no-insecure-loopback"], {"KEEPTIME_TLS_ALLOW_NAME": "a"})
    assert from_flags.tls_allow_name == ["x", "y"] and from_flags.insecure_loopback is False
    printed = keeptimed("--config", path, "--print-config")
    assert 'tls_allow_name = ["migrator", "backup"]  # file' in printed.stdout
    one_line_error(keeptimed("--config", write(tmp_path, "tls_allow_name = [1]\n", "bad.toml"), "--print-config"),
                   "tls_allow_name must be a list of strings")


def test_boolean_settings_read_the_usual_spellings():
    flag = config.Setting("insecure_example", bool, False, "a boolean key")
    assert [config.from_text(flag, t, "X") for t in ("1", "true", "Yes", "on", "0", "false", "NO", "off")] == \
        [True] * 4 + [False] * 4
    with pytest.raises(config.ConfigError, match="must be true or false, got 'maybe'"):
        config.from_text(flag, "maybe", "KEEPTIME_INSECURE_EXAMPLE")
