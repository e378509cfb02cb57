"""A real PACS for the tests: Orthanc on localhost with a temporary configuration and free ports.

``orthanc`` (module-scoped pytest fixture) starts ``Orthanc`` (Debian package ``orthanc``; .ci/run
installs it) with its own storage, index and configuration in a temporary folder, HTTP and DICOM
on free localhost ports, no plugins, no authentication, and stops it after the module. It never
touches /etc/orthanc or a system service. Use it with ``from orthanc_fixture import orthanc``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

AE_TITLE = "ORTHANCTEST"


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Orthanc:
    """A running Orthanc: ``rest(method, path, body)``, ``dicom_port``, ``ae_title``, ``node``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.ae_title = AE_TITLE
        self.url = f"http://127.0.0.1:{self.http_port}"
        config = {
            "Name": "StrokeMismatchTestPACS", "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"), "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "HttpServerEnabled": True, "DicomServerEnabled": True, "Plugins": [], "LuaScripts": [],
            "DicomCheckCalledAet": False, "UnknownSopClassAccepted": True, "StorageCompression": False,
            "DicomModalities": {}, "DicomModalitiesInDatabase": False, "SaveJobs": False,
            "ConcurrentJobs": 1, "DicomScuTimeout": 10, "HttpTimeout": 30, "OverwriteInstances": True,
        }
        self.config_path = folder / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=1))
        self.log_path = folder / "orthanc.log"
        self.process = None

    @property
    def node(self) -> str:
        """``AET@HOST:PORT`` of its DICOM server."""
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    def start(self, timeout_s: float = 60.0):
        executable = shutil.which("Orthanc")
        assert executable, "Orthanc is not installed: apt-get install orthanc (.ci/run does it)"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([executable, str(self.config_path)], cwd=self.folder,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                self.rest("GET", "/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not start in time")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def rest(self, method: str, path: str, body=None, *, raw: bool = False):
        """Call the REST API; JSON bodies for dicts/lists, bytes as is; returns the parsed JSON."""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
        return payload if raw else (json.loads(payload) if payload else None)

    def upload(self, paths) -> list[str]:
        """POST each file to /instances; returns the Orthanc instance ids."""
        return [self.rest("POST", "/instances", Path(p).read_bytes())["ID"] for p in paths]

    def instances_tags(self) -> list[dict]:
        """Simplified tags of every stored instance."""
        return [self.rest("GET", f"/instances/{i}/simplified-tags") for i in self.rest("GET", "/instances")]

    def clear(self):
        for patient in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{patient}")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A running Orthanc for the module (stopped after it)."""
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
