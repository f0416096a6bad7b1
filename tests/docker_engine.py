"""A real Docker Engine API for the Docker driver's tests: podman serving it on a private unix socket.

The engine gets its own storage, run and temp directories, so the tests neither see nor disturb any
other podman use on the machine, and an image built here from the machine's static busybox (no registry
is reachable). Missing packages are installed by `scripts/podman-setup.sh` when the tests run as root;
the tests are skipped, saying why, only when podman cannot be installed or started.

`BATCHYARD_TEST_DOCKER_URL=unix:///var/run/docker.sock` runs the same tests against that engine instead
(Docker itself, say); the image is imported through the API there too.
"""

from __future__ import annotations

import http.client
import io
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO / "scripts" / "podman-setup.sh"
CONTAINERS_CONF = REPO / "scripts" / "podman" / "containers.conf"
BUSYBOX = Path("/bin/busybox")
IMAGE_REPO = "localhost/batchyard-test-busybox"
IMAGE = f"{IMAGE_REPO}:latest"
EXTERNAL_ENGINE = "BATCHYARD_TEST_DOCKER_URL"
READY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class DockerEngine:
    url: str
    image: str


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    external = os.environ.get(EXTERNAL_ENGINE)
    if external:
        engine = DockerEngine(external, IMAGE)
        _import_busybox(engine, tmp_path_factory.mktemp("engine"))
        yield engine
        return
    _ensure_installed()
    base = tmp_path_factory.mktemp("podman")
    socket_path = base / "podman.sock"
    podman = [
        shutil.which("podman") or "podman",
        "--root",
        str(base / "storage"),
        "--runroot",
        str(base / "run"),
        "--tmpdir",
        str(base / "tmp"),
    ]
    service = subprocess.Popen(
        [*podman, "system", "service", "--time=0", f"unix://{socket_path}"],
        env=_env(),
        cwd=base,
        stdout=subprocess.DEVNULL,
        stderr=(base / "service.log").open("wb"),
    )
    try:
        _wait_ready(service, socket_path, base / "service.log")
        engine = DockerEngine(f"unix://{socket_path}", IMAGE)
        _import_busybox(engine, base)
        yield engine
    finally:
        subprocess.run([*podman, "rm", "--all", "--force", "--time", "0"], env=_env(), capture_output=True)
        service.terminate()
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def _env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def _ensure_installed() -> None:
    if shutil.which("podman") and shutil.which("runc") and _static_busybox():
        return
    done = subprocess.run(["sh", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"podman could not be installed: {(done.stderr or done.stdout).strip()[-500:]}")


def _static_busybox() -> bool:
    """The image holds nothing but /bin/busybox, so it must not need a dynamic loader (ldd fails)."""
    if not BUSYBOX.exists():
        return False
    ldd = shutil.which("ldd")
    return ldd is None or subprocess.run([ldd, str(BUSYBOX)], capture_output=True).returncode != 0


def _wait_ready(service: subprocess.Popen[bytes], socket_path: Path, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.poll() is not None:
            pytest.skip(f"podman system service exited: {log_path.read_text()[-500:]}")
        if socket_path.exists():
            with socket.socket(socket.AF_UNIX) as client:
                try:
                    client.connect(str(socket_path))
                    client.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
                    if client.recv(64).startswith(b"HTTP/1.1 200"):
                        return
                except OSError:
                    pass
        time.sleep(0.05)
    pytest.skip(f"podman system service did not answer within {READY_TIMEOUT_S} s")


def _import_busybox(engine: DockerEngine, base: Path) -> None:
    """A rootfs of busybox and its applets as symlinks, imported through the API (like `docker import`)
    as an image whose CMD is a shell."""
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    archive = base / "busybox-rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        for directory in ("bin", "tmp", "work", "etc"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in applets.stdout.split():
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type = tarfile.SYMTYPE
                link.linkname = "busybox"
                tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
        entry = tarfile.TarInfo("etc/passwd")
        entry.size = len(passwd)
        tar.addfile(entry, io.BytesIO(passwd))
    query = urlencode(
        [
            ("fromSrc", "-"),
            ("repo", IMAGE_REPO),
            ("tag", "latest"),
            ("changes", 'CMD ["/bin/sh"]'),
            ("changes", "ENV PATH=/bin"),
        ]
    )
    connection = _engine_connection(engine.url)
    try:
        connection.request(
            "POST", f"/images/create?{query}", archive.read_bytes(), {"Content-Type": "application/x-tar"}
        )
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
    finally:
        connection.close()
    if response.status != 200 or '"error' in body:
        raise RuntimeError(f"importing the busybox image failed ({response.status}): {body[-500:]}")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def _engine_connection(url: str) -> http.client.HTTPConnection:
    if url.startswith("unix://"):
        return _UnixConnection(url.removeprefix("unix://"))
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "localhost", parts.port or 2375, timeout=120)
