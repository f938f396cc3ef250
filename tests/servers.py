"""Database servers the suite starts itself: PgBouncer and a streaming PostgreSQL standby.

Both sit in front of (or behind) the machine's PostgreSQL at 127.0.0.1:5432, listen on a
free loopback port only, live in a temporary directory of their own and are stopped (and
the directory removed) by :meth:`stop`. When the suite runs as root they run as the
``postgres`` OS user, since neither PgBouncer nor PostgreSQL will run as root.

* :class:`PgBouncer`: Debian's ``pgbouncer`` (``make scale-servers`` installs it) in
  transaction pooling mode, any database name forwarded to the upstream server.
* :class:`Standby`: ``pg_basebackup -R`` of the running cluster into the temporary
  directory, started as a hot standby with ``pg_ctl`` from ``/usr/lib/postgresql/*/bin``.
  It needs a ``replication`` line in the primary's ``pg_hba.conf`` (also
  ``make scale-servers``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import URL

__all__ = ["PgBouncer", "ServerUnavailableError", "Standby", "free_port"]

LOOPBACK = "127.0.0.1"
# How long a server may take to accept connections before it counts as broken.
START_DEADLINE_S = 60


class ServerUnavailableError(RuntimeError):
    """The server cannot be started here (missing binary, refused replication...)."""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((LOOPBACK, port)) == 0


def _as_server_user() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to the ``postgres`` user (nothing otherwise)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": pwd.getpwnam("postgres").pw_gid}


def _workdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class PgBouncer:
    """A PgBouncer process in transaction pooling mode in front of ``upstream``."""

    def __init__(self, upstream_host: str = LOOPBACK, upstream_port: int = 5432) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str:
        found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
        if found is None:
            raise ServerUnavailableError("pgbouncer is not installed (run `make scale-servers`)")
        return found

    def url(self, database: str, *, user: str = "postgres") -> URL:
        """A convostore URL for ``database`` through this PgBouncer."""
        return URL.create(
            "postgresql+asyncpg",
            username=user,
            host=LOOPBACK,
            port=self.port,
            database=database,
            query={"pgbouncer": "transaction"},
        )

    def start(self) -> None:
        binary = self.binary()
        self.dir = _workdir("convostore-pgbouncer-")
        for _ in range(3):  # another process may take the free port before we bind it
            self.port = free_port()
            self._configure()
            log = self.dir / "pgbouncer.log"
            self.process = subprocess.Popen(
                [binary, str(self.dir / "pgbouncer.ini")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                **_as_server_user(),
            )
            deadline = time.monotonic() + START_DEADLINE_S
            while time.monotonic() < deadline and self.process.poll() is None:
                if _accepts(self.port):
                    return
                time.sleep(0.05)
            self._terminate()
        raise ServerUnavailableError(f"pgbouncer did not start:\n{_tail(log)}")

    def _configure(self) -> None:
        assert self.dir is not None
        host, port = self.upstream
        _write(self.dir / "userlist.txt", '"postgres" ""\n')
        _write(
            self.dir / "pgbouncer.ini",
            f"""\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = {LOOPBACK}
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/userlist.txt
admin_users = postgres
pool_mode = transaction
max_client_conn = 500
default_pool_size = 8
max_db_connections = 16
server_idle_timeout = 5
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
""",
        )

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stop(self) -> None:
        self._terminate()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _pg_bin(name: str, major: int) -> str:
    path = Path(f"/usr/lib/postgresql/{major}/bin/{name}")
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise ServerUnavailableError(f"PostgreSQL {major}'s {name} is not installed")
    return found


class Standby:
    """A hot standby of the PostgreSQL at ``primary``, streaming from it over loopback.

    Args:
        settings: The primary's values of the settings a hot standby must match or exceed
            (``max_connections`` and friends), and ``server_version_num``.
    """

    MATCHED = (
        "max_connections",
        "max_prepared_transactions",
        "max_locks_per_transaction",
        "max_wal_senders",
        "max_worker_processes",
    )

    def __init__(self, settings: dict[str, str], primary_port: int = 5432) -> None:
        self.settings = settings
        self.primary_port = primary_port
        self.major = int(settings["server_version_num"]) // 10000
        self.port = 0
        self.dir: Path | None = None

    @property
    def data(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    def url(self, database: str) -> URL:
        return URL.create(
            "postgresql+asyncpg",
            username="postgres",
            host=LOOPBACK,
            port=self.port,
            database=database,
        )

    def _run(self, *args: str, timeout: float = START_DEADLINE_S) -> None:
        try:
            subprocess.run(
                args,
                check=True,
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                **_as_server_user(),
            )
        except subprocess.CalledProcessError as exc:
            output = (exc.stderr or b"").decode(errors="replace").strip()
            raise ServerUnavailableError(f"{Path(args[0]).name} failed: {output}") from exc

    def create(self) -> None:
        """Copy the primary with ``pg_basebackup -R`` and start the standby on a free port."""
        self.dir = _workdir("convostore-standby-")
        self._run(
            _pg_bin("pg_basebackup", self.major),
            f"--host={LOOPBACK}",
            f"--port={self.primary_port}",
            "--username=postgres",
            f"--pgdata={self.data}",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",
        )
        self.port = free_port()
        matched = "\n".join(f"{name} = {self.settings[name]}" for name in self.MATCHED)
        _write(
            self.data / "postgresql.conf",
            f"""\
listen_addresses = '{LOOPBACK}'
port = {self.port}
unix_socket_directories = '{self.dir}'
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
fsync = off
shared_buffers = 32MB
autovacuum = off
{matched}
""",
        )
        _write(self.data / "pg_hba.conf", f"host all all {LOOPBACK}/32 trust\n")
        _write(self.data / "pg_ident.conf", "")
        self.start()

    def start(self) -> None:
        """Start (or restart) the standby and wait until it accepts connections."""
        self._run(
            _pg_bin("pg_ctl", self.major),
            "start",
            f"--pgdata={self.data}",
            f"--log={self.dir}/standby.log",
            "--wait",
            f"--timeout={START_DEADLINE_S}",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the standby; its data stays for :meth:`start`."""
        if self.dir is not None and (self.data / "postmaster.pid").exists():
            with contextlib.suppress(ServerUnavailableError, subprocess.TimeoutExpired):
                self._run(
                    _pg_bin("pg_ctl", self.major),
                    "stop",
                    f"--pgdata={self.data}",
                    f"--mode={mode}",
                    "--wait",
                )

    def destroy(self) -> None:
        """Stop the standby and remove everything it had."""
        self.stop("immediate")
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def log(self) -> str:
        assert self.dir is not None
        return _tail(self.dir / "standby.log")
