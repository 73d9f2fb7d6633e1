"""The study's storage, made to survive what disks, servers and users do to it.

- The journal file (the default, RUN_DIR/journal.log). Optuna skips a last line that does
  not decode (a write cut by a power loss, a line of garbage) but appends the next record
  right after it, and from then on every read fails. So before a journal is opened its tail
  is checked under the journal's own lock: an unfinished or undecodable line is cut off (and
  kept beside the journal in journal.log.cut-<time>), and the repair is said on stderr.
  Records are appended to the existing file only (a journal deleted or replaced mid-search
  is an error, not a fresh empty journal), and an I/O error while reading or writing it is
  one StorageError naming the file and the cause.
- A database (PostgreSQL, MySQL): an outage of up to OUTAGE_S is waited out — each call is
  retried with backoff, and the worker says that the database is unreachable and, once it
  is back, for how long it was. A missed heartbeat is skipped, not a dead heartbeat thread.
- URLs are never printed with their password (redact).
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from ..errors import AttndslError, SpecError

# how long a database may be unreachable before the worker gives up (a server restart, a
# failover, a network blip: seconds to a few minutes)
OUTAGE_S = 300.0
# what holds the storage URL for the workers a supervisor starts (not their command line,
# where `ps` shows it to everyone on the machine)
STORAGE_ENV = "ATTNDSL_STORAGE"
OUTPUTS = ("front.json", "trials.csv", "pareto")


class StorageError(AttndslError):
    """The study's storage cannot be read or written (the path and the cause are named).
    Finished trials stay in it: fix the cause and run the same command to resume."""


def redact(text: str, url: str | None = None) -> str:
    """`text` with the password of every URL in it (and of `url`, wherever it appears)
    replaced by ***."""
    secret = _password(url) if url else None
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]+@", r"\1***@", text)


def _password(url: str) -> str | None:
    match = re.match(r"\w[\w+.-]*://[^:/@\s]*:([^@\s]+)@", url)
    return match.group(1) if match else None


# ---------------------------------------------------------------- choosing a storage
def make_storage(url: str | None, run_dir: Path):
    if url is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        journal = run_dir / "journal.log"
        _refuse_lost_journal(journal, run_dir)
        return journal_storage(journal)
    if url.startswith("sqlite:"):
        database = url[len("sqlite:"):].lstrip("/")
        if database in ("", ":memory:") or ":memory:" in url or "mode=memory" in url:
            raise SpecError(f"--storage {url}: an in-memory SQLite database keeps nothing (each "
                            "connection sees its own, and it is gone when the search ends); "
                            "give a file, sqlite:///FILE.db, or leave --storage out for the "
                            "run directory's journal", path="storage")
    if url.startswith(("sqlite:", "postgresql", "mysql")):
        return _database(url)
    if url.endswith(".log") or url.startswith("journal:"):
        path = url.split(":", 1)[1] if url.startswith("journal:") else url
        if not path.strip():
            raise SpecError(f"--storage {url!r}: a journal needs a file path, e.g. "
                            "journal:/shared/study.log or study.log", path="storage")
        return journal_storage(Path(path).expanduser())
    raise SpecError(f"--storage {redact(url)!r} is not understood; give sqlite:///FILE.db, "
                    "postgresql://USER@HOST/DB, or a journal file (FILE.log); without "
                    "--storage the study lives in RUN_DIR/journal.log", path="storage")


def _refuse_lost_journal(journal: Path, run_dir: Path) -> None:
    """An empty journal beside the outputs of an earlier search means the study was lost
    (a truncated file, a failed copy): a new study here would overwrite those outputs."""
    if journal.exists() and journal.stat().st_size > 0:
        return
    left = [name for name in OUTPUTS if (run_dir / name).exists()]
    if left:
        state = "is empty" if journal.exists() else "is missing"
        raise StorageError(
            f"{journal} {state}, but {run_dir} holds the outputs of an earlier search "
            f"({', '.join(left)}): its study was lost. Restore journal.log from a backup to "
            f"resume it, or start a new study elsewhere (--study NEW_NAME or another "
            f"--runs-dir); nothing is overwritten")


def _database(url: str):
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from .runner import GRACE_S, HEARTBEAT_S
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    shown = redact(url)
    url = _postgres_driver(url)
    engine = {}
    if not url.startswith("sqlite"):
        # each worker process holds at most pool_size + max_overflow connections (its
        # trial loop and Optuna's heartbeat thread): W workers need 4·W of the server's
        # max_connections (100 by default) — "too many clients" otherwise (optuna#1347)
        engine = {"pool_size": 2, "max_overflow": 2, "pool_pre_ping": True,
                  "pool_recycle": 1800}
    try:
        return PatientRDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                 grace_period=GRACE_S,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(3))
    except ImportError as exc:
        raise SpecError(f"--storage {shown}: {exc}; for PostgreSQL install psycopg "
                        "(pip install 'attndsl[postgres]')", path="storage") from None
    except Exception as exc:   # sqlalchemy's OperationalError: no server, bad credentials
        raise SpecError(f"--storage {shown}: cannot open the database: "
                        f"{redact(str(exc).splitlines()[0][:300], url)}",
                        path="storage") from None


def _postgres_driver(url: str) -> str:
    """`postgresql://` means psycopg2 to SQLAlchemy; with only psycopg (3) installed, say so."""
    if not url.startswith("postgresql://"):
        return url
    try:
        import psycopg2  # noqa: F401  (SQLAlchemy's default postgresql driver)
        return url
    except ImportError:
        return "postgresql+psycopg://" + url[len("postgresql://"):]


# ---------------------------------------------------------------- the journal file
def journal_storage(path: Path) -> JournalStorage:
    return JournalStorage(CheckedJournal(Path(path)))


class CheckedJournal(JournalFileBackend):
    """Optuna's journal file, repaired before use and never silently re-created."""

    def __init__(self, path: Path):
        parent = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise StorageError(f"journal {path}: is a directory; give a file path")
        if not parent.is_dir():
            state = "does not exist" if not parent.exists() else "is not a directory"
            raise StorageError(f"journal {path}: its folder {parent} {state}; create it or "
                               "give a journal path in an existing folder")
        try:
            super().__init__(str(path))      # creates an empty file when there is none
            with _locked(self._lock):
                repaired = repair_tail(path)
        except OSError as exc:
            raise _io_error(path, "open", exc) from None
        if repaired:
            print(f"attndsl: {repaired}", file=sys.stderr, flush=True)

    def read_logs(self, log_number_from: int):
        path = self._file_path
        try:
            yield from super().read_logs(log_number_from)
        except OSError as exc:
            raise _io_error(path, "read", exc) from None
        except ValueError as exc:       # a line that does not decode, not at the end
            raise StorageError(f"journal {path}: a record does not decode ({exc}); it was "
                               "damaged while this search ran. Run the same command again: "
                               "the journal is repaired before it is opened") from None

    def append_logs(self, logs: list) -> None:
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        try:
            with _locked(self._lock):
                # O_APPEND without O_CREAT: a journal deleted under a running search (its
                # run directory removed) is an error here, not a new journal of orphan records
                fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND)
                try:
                    os.write(fd, text.encode("utf-8"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise _io_error(self._file_path, "write", exc) from None


class _locked:
    """The journal's lock (Optuna's symlink lock, which every writer takes)."""

    def __init__(self, lock: JournalFileSymlinkLock):
        self.lock = lock

    def __enter__(self):
        self.lock.acquire()

    def __exit__(self, *exc):
        try:
            self.lock.release()
        except RuntimeError:       # the lock file went with its folder: nothing to release
            pass


def _io_error(path, action: str, exc: OSError) -> StorageError:
    cause = exc.strerror or str(exc)
    hint = {"write": "the finished trials in it are kept; make it writable (or free the disk) "
                     "and run the same command to resume",
            "read": "check the file and run the same command to resume",
            "open": "check the path and its permissions"}[action]
    if isinstance(exc, FileNotFoundError) and action != "open":
        cause = "it was deleted while the search ran (its run directory removed?)"
        hint = "nothing more can be recorded there; restore it from a backup to resume"
    return StorageError(f"cannot {action} the journal {path}: {cause}; {hint}")


def repair_tail(path: Path) -> str:
    """Cut what a crash left at the end of a journal — a record without its newline, a line
    that does not decode — and keep it in `<journal>.cut-<time>`. Lines that do not decode
    before the end (a journal an older attndsl went on writing after such a tail) are taken
    out too; a complete record glued onto a cut one is kept. Returns what was done ("" when
    the journal was sound). Call it holding the journal's lock."""
    data = path.read_bytes()
    if not data:
        return ""
    lines = data.split(b"\n")
    tail = lines.pop()                      # b"" when the file ends with a newline
    kept, cut = [], []
    for line in lines:
        if _decodes(line):
            kept.append(line)
            continue
        glued = line.rfind(b'{"op_code"')    # a resume's record written after a cut one
        if glued > 0 and _decodes(line[glued:]):
            kept.append(line[glued:])
            cut.append(line[:glued])
        else:
            cut.append(line)
    if tail:
        cut.append(tail)
    if not cut:
        return ""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    saved = path.with_name(f"{path.name}.cut-{stamp}")
    saved.write_bytes(b"\n".join(cut) + b"\n")
    good = b"".join(line + b"\n" for line in kept)
    if data.startswith(good):
        os.truncate(path, len(good))        # only the tail goes: earlier offsets stay valid
    else:
        tmp = path.with_name(path.name + ".repair")
        tmp.write_bytes(good)
        os.replace(tmp, path)
    size = sum(len(c) for c in cut)
    return (f"repaired the journal {path}: cut {len(cut)} damaged record(s), {size} bytes (a "
            f"write interrupted by a crash or a power loss, or foreign text); they are kept "
            f"in {saved}. {len(kept)} records are intact")


def _decodes(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


# ---------------------------------------------------------------- databases
def _unreachable(exc: BaseException) -> bool:
    """A lost or refused connection (the server stopped, restarting, out of reach), as
    opposed to an error in what was asked."""
    from sqlalchemy import exc as sa
    seen = exc
    while seen is not None:
        if isinstance(seen, (sa.OperationalError, sa.InterfaceError)) or (
                isinstance(seen, sa.DBAPIError) and seen.connection_invalidated):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _patient(method):
    def call(self, *args, **kwargs):
        started, delay = None, 0.5
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:       # noqa: BLE001 — sorted by _unreachable
                if not _unreachable(exc):
                    raise
                now = time.monotonic()
                if started is None:
                    started = now
                    self._say(f"the database {self._shown} is unreachable "
                              f"({_first_line(exc)}); retrying for up to {OUTAGE_S:.0f} s")
                if now - started > OUTAGE_S:
                    raise StorageError(
                        f"the database {self._shown} has been unreachable for "
                        f"{now - started:.0f} s ({_first_line(exc)}); finished trials are kept "
                        "there: run the same command to resume once it is back") from None
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if started is not None:
                self._say(f"the database {self._shown} is back after "
                          f"{time.monotonic() - started:.0f} s unreachable; going on")
            return result
    call.__name__ = method.__name__
    return call


def _first_line(exc: BaseException) -> str:
    """The driver's own words (connection refused, server closed the connection), not the
    wrappers' (Optuna's StorageInternalError says "invalid data in the commit")."""
    seen, cause = exc, exc
    while seen is not None:
        if getattr(seen, "orig", None) is not None:
            cause = seen.orig
            break
        seen = seen.__cause__ or seen.__context__
    text = str(cause).strip().splitlines()
    return (text[0] if text else type(cause).__name__)[:200]


class PatientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose calls wait out an outage of the database (up to OUTAGE_S)."""

    def __init__(self, url: str, **kwargs):
        self._shown = redact(url)
        super().__init__(url, **kwargs)

    def _say(self, message: str) -> None:
        print(f"attndsl: {message}", file=sys.stderr, flush=True)

    def record_heartbeat(self, trial_id: int) -> None:
        # the heartbeat thread: a beat missed during an outage is skipped (the next one
        # lands); an exception would end the thread, and the worker would look dead
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:    # noqa: BLE001
            if not _unreachable(exc):
                raise


for _name in ("create_new_study", "delete_study", "set_study_user_attr",
              "set_study_system_attr", "get_study_id_from_name", "get_study_name_from_id",
              "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
              "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies",
              "create_new_trial", "set_trial_param", "get_trial_param",
              "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
              "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial",
              "get_all_trials", "get_best_trial", "get_n_trials", "_get_stale_trial_ids",
              # what Optuna's _CachedStorage (in front of every RDBStorage) calls directly
              "_create_new_trial", "_get_best_trial_id", "_get_trials", "_set_trial_param"):
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(PatientRDBStorage, _name, _patient(getattr(optuna.storages.RDBStorage, _name)))
