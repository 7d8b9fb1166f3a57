"""One owner per run directory: `<run dir>/.nslm-lock` names the process that writes into it.

Two identical commands must not share a run (interleaved `metrics.csv`, two best checkpoints, one
`results.json` overwriting the other). Rank 0 of a run takes the lock before it writes anything and drops
it when it ends; auto-resume never enters a directory whose owner is alive and says which one it skipped.

Alive means: on this host, the owner's process exists; on another host, the owner refreshed the lock
(a heartbeat every HEARTBEAT_S) within STALE_AFTER_S. A lock whose owner is dead (SIGKILL, a lost node)
is taken over. A SLURM job requeued under the same job id is its own successor: its earlier incarnation's
lock is taken over at once, wherever it ran. Takeover writes a new lock and reads it back, so of two
processes taking over the same stale lock at once exactly one keeps it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from nslm.errors import NslmError
from nslm.utils.atomic import atomic_write_json
from nslm.utils.checks import is_whole_number

log = logging.getLogger(__name__)

LOCK_FILE = ".nslm-lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0


class RunLockedError(NslmError):
    pass


def read_owner(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / LOCK_FILE
    try:
        owner = json.loads(path.read_text())
        owner["heartbeat"] = path.stat().st_mtime
    except (OSError, ValueError, TypeError):
        return None
    return owner if isinstance(owner, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def process_start(pid: int) -> str | None:
    """When process `pid` started (Linux: clock ticks since boot, /proc/<pid>/stat field 22); None elsewhere.
    A pid alone can be reused by an unrelated process after the owner died (container restarts reuse low
    pids): the lock records both and the owner is alive only if both still match."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # fields after "(comm)": state is field 3, starttime 22


def owner_alive(owner: dict[str, Any] | None) -> bool:
    if owner is None:
        return False
    slurm_job = os.environ.get("SLURM_JOB_ID")
    if slurm_job and owner.get("slurm_job") == slurm_job:
        return False  # this job's own earlier incarnation (requeued): it is gone
    if owner.get("host") == socket.gethostname():
        pid = owner.get("pid")
        if not is_whole_number(pid) or pid <= 0:
            return False  # a damaged lock names no process: nobody owns the run
        if pid == os.getpid() or not _pid_alive(pid):
            return False
        recorded, now = owner.get("proc_start"), process_start(pid)
        return recorded is None or now is None or recorded == now  # same pid, another process: dead owner
    try:
        return time.time() - float(owner.get("heartbeat", 0)) < STALE_AFTER_S
    except (TypeError, ValueError):
        return False


def describe(owner: dict[str, Any]) -> str:
    return f"pid {owner.get('pid')} on {owner.get('host')}"


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.me = {
            "pid": os.getpid(),
            "proc_start": process_start(os.getpid()),
            "host": socket.gethostname(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "nonce": secrets.token_hex(8),
            "started": time.time(),
        }
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        """Own the run directory or raise RunLockedError naming the live owner."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            self._take_over()
        else:
            with os.fdopen(handle, "w") as out:
                json.dump(self.me, out)
        self._beat = threading.Thread(target=self._heartbeat, name="nslm-run-lock", daemon=True)
        self._beat.start()

    def _take_over(self) -> None:
        owner = read_owner(self.run_dir)
        if owner_alive(owner):
            raise RunLockedError(
                f"{self.run_dir} is in use by another nslm-train ({describe(owner)}); wait for it to finish, or "
                "start a separate run (resume=false, or another hydra.run.dir)"
            )
        if owner is not None:
            log.warning("taking over %s from its dead owner (%s)", self.run_dir, describe(owner))
        atomic_write_json(self.path, self.me)
        time.sleep(0.05)  # let a concurrent taker's write land, then see whose survived
        survivor = read_owner(self.run_dir)
        if survivor is None or survivor.get("nonce") != self.me["nonce"]:
            raise RunLockedError(
                f"{self.run_dir} was just taken by another nslm-train "
                f"({describe(survivor or {})}); start a separate run (resume=false)"
            )

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        owner = read_owner(self.run_dir)
        if owner is not None and owner.get("nonce") == self.me["nonce"]:
            with contextlib.suppress(OSError):
                self.path.unlink()
