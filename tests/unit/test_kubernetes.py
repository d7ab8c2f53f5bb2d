"""deploy/kubernetes and deploy/container: the DaemonSet keeps the contract
keeptimed relies on (paths, capabilities, probes, command, image, metrics),
read from the manifests themselves and checked against the code."""
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tomllib

import pytest

import keeptime
import yaml

from keeptime import cli
from keeptime.defaults import DEFAULT_CONFIG
from keeptimed import caps, config
from keeptimed import main as keeptimed_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KUBE = os.path.join(ROOT, "deploy", "kubernetes")
CONTAINERFILE = os.path.join(ROOT, "deploy", "container", "Containerfile")


def load_yaml(name: str) -> list[dict]:
    with open(os.path.join(KUBE, name), encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def pyproject(where: str = "") -> dict:
    """The root's pyproject.toml (keeptimed's), or client/'s (keeptime's)."""
    with open(os.path.join(ROOT, where, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def kustomization() -> dict:
    (doc,) = load_yaml("kustomization.yaml")
    return doc


@pytest.fixture(scope="module")
def daemonset(kustomization) -> dict:
    found = [doc for name in kustomization["resources"] for doc in load_yaml(name) if doc["kind"] == "DaemonSet"]
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def pod(daemonset) -> dict:
    return daemonset["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (only,) = pod["containers"]
    return only


@pytest.fixture(scope="module")
def cfg(kustomization) -> config.Config:
    """The configuration keeptimed loads in the pod: the ConfigMap's file, no flags, no environment."""
    (generator,) = kustomization["configMapGenerator"]
    (name,) = generator["files"]
    return config.load({}, {}, os.path.join(KUBE, name), explicit=True)


def mounts(pod: dict, container: dict) -> dict:
    """mountPath -> the volume mounted there."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}


def test_kustomization_lists_existing_manifests_in_its_namespace(kustomization):
    for name in kustomization["resources"]:
        assert os.path.exists(os.path.join(KUBE, name)), name
    (namespace,) = load_yaml("namespace.yaml")
    assert namespace["kind"] == "Namespace" and namespace["metadata"]["name"] == kustomization["namespace"]
    # hostPID and CAP_SYS_ADMIN are refused by the baseline and restricted levels.
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_the_pod_shares_the_host_pid_namespace_but_is_not_privileged(pod, container):
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork") and not pod.get("hostIPC")
    assert pod["automountServiceAccountToken"] is False  # keeptimed never calls the Kubernetes API
    security = container["securityContext"]
    assert security["privileged"] is False and security["runAsUser"] == 0
    # Kubernetes refuses allowPrivilegeEscalation: false next to CAP_SYS_ADMIN.
    assert security.get("allowPrivilegeEscalation", True) is True


def test_capabilities_are_exactly_what_keeptimed_declares_it_needs(container):
    """caps.NEEDS is what keeptimed warns about at startup and doctor reports."""
    capabilities = container["securityContext"]["capabilities"]
    assert capabilities["drop"] == ["ALL"]
    assert sorted(capabilities["add"]) == sorted(need.name.removeprefix("CAP_") for need in caps.NEEDS)
    assert all("CAP_" + name in caps.NAMES for name in capabilities["add"])
    # The runtime's AppArmor profile forbids ptrace-reading other profiles'
    # processes, which /proc/PID/ns/time needs.
    assert container["securityContext"]["appArmorProfile"]["type"] == "Unconfined"


def test_command_is_the_keeptimed_entry_point_and_its_flags_parse(container, cfg):
    scripts = pyproject()["project"]["scripts"]
    program, *flags = container["command"]
    assert scripts[program] == "keeptimed.main:main"
    args, loaded = keeptimed_main.load_config(flags + ["--config", cfg.path], {})
    assert loaded.values == cfg.values and not args.print_config


def test_configuration_file_is_valid_and_mounted_where_keeptimed_reads_it(kustomization, pod, container, cfg):
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == [os.path.basename(DEFAULT_CONFIG)]
    mounted = mounts(pod, container)[posixpath.dirname(DEFAULT_CONFIG)]
    assert mounted["configMap"]["name"] == generator["name"]
    assert all(source == "file" or key not in ("socket", "db") for key, source in cfg.sources.items())


@pytest.mark.parametrize("key", ["socket", "db"])
def test_socket_and_store_live_on_the_node_at_the_same_paths(key, pod, container, cfg):
    """The node's keeptime CLI and CRIU action scripts find the socket at the
    default path, and records outlive the pod."""
    directory = posixpath.dirname(cfg.values[key])
    volume = mounts(pod, container)[directory]
    assert volume["hostPath"] == {"path": directory, "type": "DirectoryOrCreate"}
    assert cfg.values[key] == config.BY_KEY[key].default


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_ask_grpc_health_over_the_socket_with_the_cli(probe, container, cfg):
    spec = container[probe]
    program, *argv = spec["exec"]["command"]
    assert pyproject("client")["project"]["scripts"][program] == "keeptime.cli:main"
    args = cli.build_parser().parse_args(argv)
    assert args.command == "health" and args.socket == cfg.socket
    # The call's own deadline ends before Kubernetes gives up on the probe.
    assert args.timeout < spec["timeoutSeconds"]


def test_metrics_port_matches_the_configuration_and_the_scrape_annotations(daemonset, container, cfg):
    host, port = config.split_host_port(cfg.metrics_address)
    assert host == "0.0.0.0"  # the pod's own network namespace: reachable at the pod IP
    (declared,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert declared["containerPort"] == port
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"


def test_restored_children_are_not_limited_or_killed_by_rollouts(daemonset, pod, container, cfg):
    """Processes keeptimed starts share its container's cgroup."""
    assert "limits" not in container.get("resources", {})
    assert daemonset["spec"]["updateStrategy"]["type"] == "OnDelete"
    assert pod["terminationGracePeriodSeconds"] > cfg.grace


def test_image_is_tagged_with_the_package_version(kustomization, container):
    (image,) = kustomization["images"]
    assert image["name"] == container["image"]
    assert image["newTag"] == pyproject()["project"]["version"] == keeptime.__version__


def containerfile_stages() -> list[list[tuple[str, str]]]:
    """The Containerfile as stages of (INSTRUCTION, arguments), continuations joined."""
    with open(CONTAINERFILE, encoding="utf-8") as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def test_image_installs_this_project_and_runs_the_daemonset_command(container):
    build, final = containerfile_stages()
    runs = " ".join(rest for instruction, rest in build if instruction == "RUN")
    prefix = re.search(r"python3 -m venv (\S+)", runs).group(1)
    assert f"{prefix}/bin/pip install" in runs and ("COPY", ". /src") in build
    # Both stages: one base, so the venv's interpreter link holds; a Python
    # the package accepts.
    (base,) = {rest.split()[0] for stage in (build, final) for instruction, rest in stage if instruction == "FROM"}
    version = re.search(r":(\d+)\.(\d+)", base).groups()
    minimum = pyproject()["project"]["requires-python"].removeprefix(">=").split(".")
    assert tuple(map(int, version)) >= tuple(map(int, minimum))
    assert ("COPY", f"--from=build {prefix} {prefix}") in final
    env = " ".join(rest for instruction, rest in final if instruction == "ENV")
    assert f"PATH={prefix}/bin:" in env
    (cmd,) = [rest for instruction, rest in final if instruction == "CMD"]
    assert shlex.split(cmd.strip("[]").replace(",", " ")) == container["command"]


def test_kustomize_renders_the_generated_config_and_the_tagged_image():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here (optional: the manifests are checked above)")
    result = subprocess.run([kubectl, "kustomize", KUBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout)}
    assert set(docs) == {"Namespace", "ConfigMap", "DaemonSet"}
    generated = docs["ConfigMap"]["metadata"]["name"]
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["config"]["configMap"]["name"] == generated
    assert pod["containers"][0]["image"] == f"keeptime:{pyproject()['project']['version']}"
    assert all(doc["metadata"].get("namespace", "keeptime") == "keeptime" for doc in docs.values())
