"""A throw-away PostgreSQL cluster for the tests: initdb + pg_ctl in a temp directory, as an
unprivileged user (PostgreSQL refuses to run as root), on a Unix socket in that directory
and a free port; stopped and removed at the end. Debian's `postgresql` package provides the
binaries (.ci/run installs it). When they are missing or the server does not start, the
fixture skips with the reason (pytest -ra prints it): never a silent pass."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _binaries() -> Path | None:
    for name in ("pg_ctl", "initdb"):
        found = shutil.which(name)
        if found:
            return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster():
    """(url, stop) or pytest.skip."""
    server = start_server()
    return server.url, server.stop


class Server:
    """A running cluster: its url, and an outage to inject (down() then up(), on the same
    port and data directory, as a restart or a failover looks to a client)."""

    def __init__(self, url, run, bin_dir, data, opts, log, root):
        self.url, self._run, self._bin, self._data = url, run, bin_dir, data
        self._opts, self._log, self._root = opts, log, root

    def down(self) -> None:
        out = self._run(self._bin / "pg_ctl", "-D", self._data, "-m", "fast", "-w", "stop")
        assert out.returncode == 0, out.stderr

    def up(self) -> None:
        out = self._run(self._bin / "pg_ctl", "-D", self._data, "-o", self._opts, "-l",
                        self._log, "-w", "start")
        assert out.returncode == 0, out.stderr

    def stop(self) -> None:
        self._run(self._bin / "pg_ctl", "-D", self._data, "-m", "immediate", "stop")
        shutil.rmtree(self._root, ignore_errors=True)


def start_server() -> Server:
    """A Server, or pytest.skip."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[test]' brings it)")
    bin_dir = _binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="attndsl-pg-"))
    data, port = root / "data", _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:         # initdb and postgres refuse root: run them as nobody
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL unprivileged")
        shutil.chown(root, "nobody")
        os.chmod(root, 0o755)
        as_user = [runuser, "-u", "nobody", "--"]

    def run(*cmd, timeout=120):
        return subprocess.run(as_user + [str(c) for c in cmd], capture_output=True, text=True,
                              timeout=timeout, cwd=root)

    out = run(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "attndsl", "--no-sync")
    if out.returncode:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {out.stderr[-500:]}")
    opts = f"-k {root} -p {port} -c listen_addresses='' -c max_connections=200 -c fsync=off"
    out = run(bin_dir / "pg_ctl", "-D", data, "-o", opts, "-l", root / "server.log", "-w",
              "start")
    if out.returncode:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"pg_ctl start failed: {out.stderr[-300:]} {log[-500:]}")
    url = f"postgresql+psycopg://attndsl@/postgres?host={root}&port={port}"
    return Server(url, run, bin_dir, data, opts, root / "server.log", root)
