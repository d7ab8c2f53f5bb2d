"""The README's fenced code blocks, for the tests that run them."""
import dataclasses
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)


@dataclasses.dataclass(frozen=True)
class Block:
    line: int           # of the opening fence
    lang: str           # "sh", "python", "json" or ""
    text: str           # dedented by the fence's indentation

    @property
    def first(self) -> str:
        return self.text.splitlines()[0].strip()

    def transcript(self) -> list[tuple[str, list[str]]]:
        """("$ command" lines without the prompt, the output shown after each)."""
        steps = []
        for line in self.text.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        return steps


def blocks() -> list[Block]:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    found = []
    for match in FENCE.finditer(text):
        indent, lang, body = match.groups()
        body = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in body.splitlines(keepends=True))
        found.append(Block(text.count("\n", 0, match.start()) + 1, lang, body))
    return found


def block(first_line_start: str) -> Block:
    """The one block whose first line starts with first_line_start."""
    (found,) = [b for b in blocks() if b.first.startswith(first_line_start)]
    return found


# How each block is checked, by the start of its first line: "run by TEST"
# (tests/integration/test_readme_examples.py::TEST runs it) or why it is not
# run by a test on a Debian host. Every block must be listed.
CHECKS = {
    "deploy/install.sh   # installs keeptime": "not run by a test: it is the set-up; .ci/run runs exactly these "
                                             "commands (test_readme.py checks that)",
    "python3 -m venv ~/venvs/migrate": "run by test_the_client_installs_and_works_without_a_compiler",
    "python3 -m venv ~/venvs/build": "run by test_both_wheels_build_and_install_together",
    "deploy/install.sh               # packages": "not run by a test: the installation (.ci/run) on a host "
                                                "with systemd",
    "keeptime: no systemd here": "not run by a test: what deploy/install.sh prints (.ci/run runs it)",
    "install -D -m 0644 deploy/systemd": "not run by a test: needs systemd as PID 1",
    "systemctl disable --now keeptimed": "not run by a test: it removes the installation",
    "docker build": "not run by a test: needs docker and a registry",
    "# or edit `images:`": "not run by a test: needs a Kubernetes cluster (test_kubernetes.py checks the manifests)",
    "$ keeptimed --print-config": "run by test_the_cli_examples_run",
    "keeptime health": "run by test_the_cli_examples_run",
    "$ keeptime doctor": "run by test_the_cli_examples_run",
    '{"ts":': "not run by a test: a log line (test_observability.py checks the logs)",
    "$ keeptime checkpoint 4242": "run by test_the_cli_examples_run",
    "$ keeptime plan 3f9a": "run by test_the_cli_examples_run",
    "$ keeptime restore 3f9a": "run by test_the_cli_examples_run",
    "$ keeptime exec": "run by test_the_cli_examples_run",
    "$ keeptime clocks 5150": "run by test_the_cli_examples_run",
    "$ keeptime wait 5150": "run by test_the_cli_examples_run",
    "$ keeptime show 3f9a": "run by test_the_cli_examples_run",
    "$ keeptime restores 3f9a": "run by test_the_cli_examples_run",
    "import os": "run by test_the_client_installs_and_works_without_a_compiler",
    "# criu itself, CRaC:": "not run by a test: it changes the host's CRIU configuration (the tests give CRIU "
                            "a configuration of their own)",
    "keeptime restore --criu-images": "not run by a test: needs a rootless CRIU dump (test_criu_cli.py runs "
                                      "restore --criu-images)",
    "proto/    the API": "not run by a test: the source tree",
    ".venv/bin/python benchmarks/bench.py": "not run by a test: it runs for minutes (test_bench_smoke.py runs "
                                            "bench.py --quick)",
    ".venv/bin/python benchmarks/load.py": "not run by a test here: test_load.py runs load.py with these arguments",
}


def check_of(b: Block) -> str:
    """How block b is checked (CHECKS); KeyError when it is not listed."""
    (key,) = [key for key in CHECKS if b.first.startswith(key)] or [None]
    if key is None:
        raise KeyError(f"README.md:{b.line}: {b.first!r} is not in tests/helpers/readme.py's CHECKS")
    return CHECKS[key]


def to_run(test: str) -> list[Block]:
    """The blocks test runs, in the README's order."""
    return [b for b in blocks() if check_of(b) == f"run by {test}"]
