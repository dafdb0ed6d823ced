"""A throwaway PostgreSQL cluster: initdb in a temp dir, started on a free port.

The suite never depends on a server someone else started: each run makes its
own cluster (about a second) and removes it afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from emulators import free_port
from emulators.process import alive


def _bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found


class ThrowawayPostgres:
    def __init__(self, port: int | None = None, database: str = "htbase") -> None:
        self.port = port or free_port()
        self.database = database
        self.root = Path(tempfile.mkdtemp(prefix="htbase-pg-"))
        self.data = self.root / "data"
        # initdb refuses to run as root: run the server as the postgres user then.
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+pg8000://postgres@127.0.0.1:{self.port}/{self.database}"

    @contextmanager
    def fresh_database(self, prefix: str = "t_") -> Iterator[str]:
        """A new, empty database on this server for the block (its URL), dropped afterwards."""
        name = prefix + uuid.uuid4().hex[:12]
        admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f"CREATE DATABASE {name}"))
            yield self.url.rsplit("/", 1)[0] + "/" + name
            with admin.connect() as connection:
                connection.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
        finally:
            admin.dispose()

    @property
    def pid(self) -> int | None:
        """The server's (the postmaster's) PID while it runs."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def alive(self) -> bool:
        return (pid := self.pid) is not None and alive(pid)

    def _run(self, *args: str) -> None:
        command = ["runuser", "-u", self.user, "--", *args] if self.user else list(args)
        subprocess.run(command, check=True, capture_output=True, text=True)

    def start(self) -> ThrowawayPostgres:
        """Create the cluster on first start; a later start resumes it after ``halt``."""
        fresh = not self.data.exists()
        if fresh:
            if self.user:
                entry = pwd.getpwnam(self.user)
                os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._run(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        # fsync=off is safe for a throwaway (a halted server's data stays in the OS cache); synchronous
        # commit stays on so that an abrupt halt, as in the outage tests, loses no committed row.
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.root / "log"),
            "start",
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c full_page_writes=off -c max_connections=200",
        )
        if fresh:
            self._run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.database)
        return self

    def halt(self) -> None:
        """Stop the server abruptly (as an outage would), keeping its data."""
        if (self.data / "postmaster.pid").exists():
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
