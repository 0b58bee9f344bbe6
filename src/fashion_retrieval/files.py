"""File helpers every layer shares: atomic writes, SHA-256 digests, and a lock that keeps two runs off one folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from fashion_retrieval.errors import FashionRetrievalError

log = logging.getLogger(__name__)

TEMP_MARK = ".tmp-"


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def atomic_save(path: Path, writer: Callable[[BinaryIO], object]) -> None:
    """Write through ``writer(handle)`` to a temporary name, fsync, then rename: readers see the old file or
    the new one, never half of one (a crash or SIGKILL mid-write leaves only the temporary file, which
    ``remove_stale_temp_files`` cleans up on the next run)."""
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_save(path, lambda handle: handle.write(data))


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temporary files that a killed writer left in ``folder`` (not those of a live process)."""
    removed = []
    for tmp in folder.glob(f".*{TEMP_MARK}*"):
        pid = tmp.name.rpartition(TEMP_MARK)[2]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted write in %s", len(removed), folder)
    return removed


def sha256_of(*parts: Path | bytes) -> str:
    """SHA-256 over the parts in order: file contents for paths, the bytes themselves otherwise.

    One file alone goes through ``hashlib.file_digest``; several parts feed one running digest (the
    digests recorded by earlier versions for adapter folders and base folders stay the same)."""
    if len(parts) == 1 and isinstance(parts[0], Path):
        with open(parts[0], "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            digest.update(part)
            continue
        with open(part, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):  # noqa: B023 - consumed at once
                digest.update(chunk)
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """An exclusive claim on a folder for one run: ``OUT/.lock`` holds the owner's host and PID.

    A second run on the same folder is refused while the owner lives; a lock left by a process that died
    (SIGKILL, a crash) is taken over, with a log line. Created with O_EXCL, so two starting runs cannot both win.
    """

    NAME = ".lock"

    def __init__(self, folder: Path, what: str = "run", *, wait: float = 0.0) -> None:
        self.path = Path(folder) / self.NAME
        self.what = what
        self.wait = wait  # seconds to wait for a live owner to finish (0: refuse at once)
        self.held = False

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        deadline = time.monotonic() + self.wait
        attempts = 0
        while attempts < 2:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and self._owner_alive(owner) and time.monotonic() < deadline:
                    time.sleep(0.2)  # e.g. another server worker exporting the model this one needs
                    continue
                attempts += 1
                if owner is not None and self._owner_alive(owner):
                    raise FashionRetrievalError(
                        f"{self.path.parent} is in use by another {self.what} (pid {owner.get('pid')} on "
                        f"{owner.get('host')}): wait for it to finish, or choose another --out"
                    ) from None
                log.warning("taking over %s: its owner %s is no longer running", self.path, owner)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "wb") as handle:
                handle.write(record)
            self.held = True
            return self
        raise FashionRetrievalError(f"could not lock {self.path.parent}: another run keeps taking it")

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return None
        return owner if isinstance(owner, dict) else None

    @staticmethod
    def _owner_alive(owner: dict) -> bool:
        pid = owner.get("pid")
        if not isinstance(pid, int):
            return False
        if owner.get("host") != socket.gethostname():
            return True  # another machine's process: we cannot tell, so we do not steal its lock
        return pid != os.getpid() and _alive(pid)

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["FolderLock", "atomic_save", "atomic_write_bytes", "remove_stale_temp_files", "sha256_of"]
