"""The container image under test: built by scripts/image.sh with podman, and run with a Deployment's container spec
(its args, env, user, read-only root, capabilities, emptyDir mounts) translated to `podman run` flags."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

IMAGE_SH = REPO_ROOT / "scripts" / "image.sh"
# A cold build installs podman, debootstrap's a base and installs the wheels (about 5 min on 2 cores); a warm one
# reuses every layer but the package's.
BUILD_TIMEOUT_S = float(os.environ.get("LITEMAAS_IMAGE_BUILD_TIMEOUT", "1800"))


@dataclasses.dataclass(frozen=True)
class Podman:
    image: str
    env: dict[str, str]  # the environment podman runs with (CONTAINERS_CONF)

    def run(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """podman with this image's containers.conf (`env` adds variables, e.g. the values of `--env NAME`)."""
        cmd = ["podman", *args]
        proc = subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc


def build_image() -> Podman:
    """`scripts/image.sh build` (installs podman, makes the base, builds the image), or fail with its output."""
    cmd = ["bash", str(IMAGE_SH), "build"]
    try:
        built = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gave up after {BUILD_TIMEOUT_S:.0f}s waiting for `{shlex.join(cmd)}`", pytrace=False)
    if built.returncode != 0 or not built.stdout.strip():
        pytest.fail(f"`{shlex.join(cmd)}` failed (exit {built.returncode}):\n{built.stderr[-4000:]}", pytrace=False)
    printed = subprocess.run(["bash", str(IMAGE_SH), "env"], capture_output=True, text=True, check=True).stdout
    exported = dict(shlex.split(line)[1].split("=", 1) for line in printed.splitlines())
    return Podman(image=built.stdout.strip().splitlines()[-1], env={**os.environ, **exported})


@dataclasses.dataclass
class ContainerRun:
    """`podman run` of one container of a Deployment, on the host network."""

    argv: list[str]  # podman's arguments; secret values are not in it (`-e NAME` takes them from podman's env)
    env: dict[str, str]  # the values of the secret variables, for podman's environment
    user: tuple[int, int]
    name: str


def container_run(
    podman: Podman,
    deployment: dict[str, Any],
    secrets: dict[str, str],
    overrides: dict[str, str],
    mounts: dict[Path, str],
) -> ContainerRun:
    """Translate the Deployment's first container: `secrets` stand for its secretKeyRefs, `overrides` replace or add
    plain variables (host networking has no port mapping, so listen ports are chosen by the caller), `mounts` are
    files bind-mounted read-only. A setting this cannot honour fails the test rather than being left out."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_security, security = pod.get("securityContext", {}), container.get("securityContext", {})
    user = (int(pod_security["runAsUser"]), int(pod_security["runAsGroup"]))
    assert user[0] != 0
    assert pod_security.get("runAsNonRoot"), pod_security
    assert security.get("runAsNonRoot"), security
    name = f"lmc-image-{container['name']}-{uuid.uuid4().hex[:8]}"
    argv = ["run", "--detach", "--name", name, "--pull=never", "--network=host", f"--user={user[0]}:{user[1]}"]
    if security.get("readOnlyRootFilesystem"):
        argv.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    for dropped in security.get("capabilities", {}).get("drop", []):
        argv += ["--cap-drop", dropped]
    assert not security.get("capabilities", {}).get("add"), security
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        assert "emptyDir" in volume, f"only emptyDir volumes are translated, not {volume}"
        size = volume["emptyDir"].get("sizeLimit", "64Mi").removesuffix("i").lower()
        argv += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
    for host_path, container_path in mounts.items():
        argv += ["--volume", f"{host_path}:{container_path}:ro"]
    env: dict[str, str] = {}
    for var in container.get("env", []):
        key = var["name"]
        if key in overrides:
            continue
        if "value" in var:
            argv += ["--env", f"{key}={var['value']}"]
        elif key in secrets:
            env[key] = secrets[key]
            argv += ["--env", key]
        else:
            assert var["valueFrom"]["secretKeyRef"].get("optional"), f"no value for the required secret {key}"
    argv += [arg for key, value in overrides.items() for arg in ("--env", f"{key}={value}")]
    argv += [podman.image, *container.get("args", [])]
    return ContainerRun(argv=argv, env=env, user=user, name=name)


# What the process inside sees: its ids, capabilities, no_new_privs, and whether the root filesystem takes a write.
SELF_CHECK = """
import os
status = dict(line.split(":", 1) for line in open("/proc/1/status").read().splitlines())
try:
    open("/opt/venv/written-at-run-time", "w").close()
    root = "writable"
except OSError as exc:
    root = exc.strerror
print(os.getuid(), os.getgid(), status["CapEff"].strip(), status["NoNewPrivs"].strip(), root, sep="|")
"""
