"""Start a throw-away PostgreSQL 15 server on loopback for the test session.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is created and
started as the unprivileged `postgres` user (Debian's package creates it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN = Path(os.environ.get("VALUEMAIL_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        if not (BIN / "initdb").exists():
            raise RuntimeError(
                f"PostgreSQL server binaries not found under {BIN}: install Debian's postgresql-15 "
                "(bash scripts/test.sh does) or set VALUEMAIL_TEST_PG_URL to an existing server"
            )
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="valuemail-pg-"))
        self.data = self.dir / "data"
        self._user = None
        if os.geteuid() == 0:
            self._user = pwd.getpwnam("postgres")
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)

    def _run(self, *args: str) -> None:
        kwargs = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        subprocess.run(args, check=True, capture_output=True, cwd=self.dir, **kwargs)

    def start(self) -> "PostgresServer":
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "valuemail", "-E", "UTF8", "--locale=C")
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not start; see {self.dir / 'log'}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://valuemail@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
