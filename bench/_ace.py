"""The side-by-side peer of ``bench/ingest.py``: atlassian-connect-express 11.5.3.

The app is ``bench/ace/`` (app.js, config.json, atlassian-connect.json, package.json
with exact versions): copied into a temporary folder, ``npm install``-ed from the npm
registry there, and run with Node on its own scratch PostgreSQL database (ACE's
sequelize store with the pure-JS ``pg`` driver: no native build), as many processes as
the ledger has workers (Node's cluster module), key fetches pointed at the bench's
simulated key server with ACE's own ``CONNECT_KEYS_CDN_URL``.

Anything missing (no ``node``/``npm``, the install fails, the app does not start or does
not verify) makes the bench print one ``PEER skipped`` line saying why and go on.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg

ACE_SOURCE = Path(__file__).resolve().parent / "ace"
ACE_FILES = ("app.js", "config.json", "atlassian-connect.json", "package.json")


class PeerUnavailable(Exception):
    """Why the peer cannot be measured (printed as the skip line)."""


@dataclass
class AcePeer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def install(work: Path, timeout: float = 300.0) -> Path:
    """``bench/ace`` copied into ``work/ace`` with its packages installed; its folder."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PeerUnavailable("Node.js and npm are not installed (apt-get install nodejs npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    major = version.stdout.strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 18:
        raise PeerUnavailable(f"Node {version.stdout.strip()} is too old for ACE 11 (needs 18+)")
    folder = work / "ace"
    folder.mkdir()
    for name in ACE_FILES:
        shutil.copy(ACE_SOURCE / name, folder / name)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--omit=dev", "--prefer-offline",
             "--loglevel=error"],
            cwd=folder, capture_output=True, text=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise PeerUnavailable(f"npm install did not finish in {timeout:.0f} s") from error
    if done.returncode != 0:
        raise PeerUnavailable(f"npm install failed ({done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-300:]}")
    print(f"   peer: atlassian-connect-express 11.5.3 installed from the npm registry in"
          f" {time.perf_counter() - started:.0f} s (Node {version.stdout.strip()}; store: sequelize"
          " + pg on PostgreSQL)")
    return folder


def start(folder: Path, database_url: str, port: int, key_server_url: str, workers: int,
          limit: float = 60.0) -> AcePeer:
    """The ACE app, until every worker listens and ``/healthz`` answers."""
    log_path = folder / f"ace-{time.time_ns()}.log"
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "PORT": str(port),
        "AC_LOCAL_BASE_URL": f"http://127.0.0.1:{port}",
        "DB_URL": database_url.replace("postgresql://", "postgres://", 1),
        "CONNECT_KEYS_CDN_URL": key_server_url,
        "ACE_WORKERS": str(workers),
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(["node", "app.js"], cwd=folder, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    peer = AcePeer(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PeerUnavailable(f"the ACE app exited ({process.returncode}):"
                                  f" {log_path.read_text(errors='replace')[-300:]}")
        if "ACE-PEER ready" in log_path.read_text(errors="replace") and _healthy(peer.url):
            return peer
        time.sleep(0.1)
    peer.stop()
    raise PeerUnavailable(f"the ACE app did not start within {limit:.0f} s")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except OSError:
        return False


def stored_installs(database_url: str) -> int:
    """Tenants ACE stored (its ``AddonSettings`` rows with key ``clientInfo``)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            """SELECT count(*) FROM "AddonSettings" WHERE key = 'clientInfo'"""
        ).fetchone()
    return int(row[0]) if row else 0
