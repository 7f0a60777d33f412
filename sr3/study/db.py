"""Schema and the one small SQL layer every part of the study goes through.

SQLite (stdlib ``sqlite3``) is the default: the whole study, images included, is
one file.  A ``postgresql://`` URL selects PostgreSQL through the same calls
(needs ``psycopg``; it is optional and not installed by sr3) for a shared
deployment.  The SQL is written once with ``?`` placeholders and portable types;
the few dialect differences (placeholder style, blob type, how a write
transaction takes its lock) live in :class:`Tx` and :data:`SCHEMA`.

Durability: SQLite runs in WAL mode with ``synchronous=FULL`` so every committed
answer is on disk before the server replies; a killed server loses nothing it
acknowledged.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import UserError
from .config import StudyConfig

# {blob} is BLOB in SQLite and BYTEA in PostgreSQL; everything else is common SQL.
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE blobs (id INTEGER PRIMARY KEY, data {blob} NOT NULL);
-- One row per image *as served*: an opaque random id pointing at encoded bytes.
-- Each trial gets its own ids even when it shows the same picture as another
-- trial, so a repeated URL never hints that an image is the (shared) reference.
CREATE TABLE images (
    id TEXT PRIMARY KEY,
    blob_id INTEGER NOT NULL REFERENCES blobs(id),
    width INTEGER NOT NULL,
    height INTEGER NOT NULL
);
CREATE TABLE trials (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    kind TEXT NOT NULL,              -- 'method' or 'catch'
    method TEXT,                     -- NULL for catch trials
    image_name TEXT NOT NULL,
    real_side TEXT NOT NULL CHECK (real_side IN ('left', 'right')),
    pool_index INTEGER NOT NULL,     -- order of the seeded design
    left_image TEXT NOT NULL REFERENCES images(id),
    right_image TEXT NOT NULL REFERENCES images(id),
    middle_image TEXT REFERENCES images(id)
);
CREATE TABLE raters (
    id TEXT PRIMARY KEY,             -- public random id (reports, exports)
    token_hash TEXT NOT NULL UNIQUE, -- sha256 of the secret in the rater's cookie
    idx INTEGER NOT NULL UNIQUE,     -- arrival order; seeds this rater's sequence
    task TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE assignments (
    id TEXT PRIMARY KEY,             -- the opaque trial id the rater's page sees
    rater_id TEXT NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,
    trial_id TEXT NOT NULL REFERENCES trials(id),
    UNIQUE (rater_id, position)
);
-- The primary key makes an answer count once however often it is re-sent.
CREATE TABLE responses (
    assignment_id TEXT PRIMARY KEY REFERENCES assignments(id),
    rater_id TEXT NOT NULL REFERENCES raters(id),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right')),
    rt_ms INTEGER NOT NULL,
    answered_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX responses_rater ON responses (rater_id);
CREATE INDEX assignments_trial ON assignments (trial_id);
"""


def is_postgres_url(target: str | Path) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


class Tx:
    """One transaction: ``one``/``all`` read rows (as tuples), ``run``/``many`` write."""

    def __init__(self, cursor, postgres: bool):
        self._cur = cursor
        self._pg = postgres

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    def run(self, sql: str, params: Iterable[Any] = ()) -> int:
        self._cur.execute(self._sql(sql), tuple(params))
        return self._cur.rowcount

    def many(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        self._cur.executemany(self._sql(sql), [tuple(r) for r in rows])

    def one(self, sql: str, params: Iterable[Any] = ()) -> tuple | None:
        self._cur.execute(self._sql(sql), tuple(params))
        return self._cur.fetchone()

    def all(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        self._cur.execute(self._sql(sql), tuple(params))
        return self._cur.fetchall()

    def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def serialize(self, key: str) -> None:
        """Make concurrent write transactions on ``key`` run one after another.

        SQLite already has the database write lock (``BEGIN IMMEDIATE``); in
        PostgreSQL take a transaction-scoped advisory lock.
        """
        if self._pg:
            self._cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))


class StudyDB:
    """A study database: a SQLite file path or a ``postgresql://`` URL.

    Connections are per thread (the web server answers requests from a thread
    pool); use :meth:`read` and :meth:`write` as context managers.
    """

    def __init__(self, target: str | Path, *, create: bool = False):
        self.target = str(target)
        self.postgres = is_postgres_url(target)
        self._local = threading.local()
        self._all_conns: list = []
        self._lock = threading.Lock()
        if self.postgres:
            try:
                import psycopg  # noqa: F401  (optional dependency)
            except ImportError:
                raise UserError(f"{_redact(self.target)}: PostgreSQL needs the psycopg package; "
                                "`pip install 'psycopg[binary]'` or use a SQLite file path") from None
            self.IntegrityError = psycopg.IntegrityError
        else:
            self.IntegrityError = sqlite3.IntegrityError
            path = Path(self.target)
            if create:
                if path.exists():
                    raise UserError(f"{path}: already exists; choose another --out or delete it "
                                    "(a study database holds answers, sr3 never overwrites it)")
                if not path.parent.is_dir():
                    raise UserError(f"{path.parent}: no such folder; create it or choose another --out")
            elif not path.is_file():
                raise UserError(f"{path}: no such study database; create one with `sr3 study create`")
        if create:
            self._create_schema()
        else:
            self._check_study()

    # -- connections -------------------------------------------------------
    def _connect(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self.postgres:
            import psycopg
            try:
                conn = psycopg.connect(self.target, autocommit=True)
            except psycopg.Error as e:
                raise UserError(f"{_redact(self.target)}: cannot connect ({e}); check the URL") from None
        else:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            conn = sqlite3.connect(self.target, timeout=30, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA busy_timeout = 30000")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = FULL")
            except sqlite3.DatabaseError as e:
                conn.close()
                raise UserError(f"{self.target}: not an sr3 study database ({e}); "
                                "create one with `sr3 study create`") from None
        self._local.conn = conn
        with self._lock:
            self._all_conns.append(conn)
        return conn

    def enable_wal(self) -> None:
        """Switch a SQLite study to write-ahead logging (concurrent readers, one writer)."""
        if not self.postgres:
            self._connect().execute("PRAGMA journal_mode = WAL")

    def close(self) -> None:
        with self._lock:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass
        self._local = threading.local()

    @contextmanager
    def _tx(self, begin: str) -> Iterator[Tx]:
        conn = self._connect()
        cur = conn.cursor()
        cur.execute(begin)
        try:
            yield Tx(cur, self.postgres)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def read(self):
        """A read transaction (a consistent snapshot)."""
        return self._tx("BEGIN" if self.postgres else "BEGIN DEFERRED")

    def write(self):
        """A write transaction; SQLite takes the write lock at once so it never deadlocks."""
        return self._tx("BEGIN" if self.postgres else "BEGIN IMMEDIATE")

    # -- schema and config -------------------------------------------------
    def _create_schema(self) -> None:
        schema = SCHEMA.format(blob="BYTEA" if self.postgres else "BLOB")
        with self.write() as tx:
            if self.postgres and tx.scalar("SELECT to_regclass('meta')") is not None:
                raise UserError(f"{_redact(self.target)}: already holds a study; use another database")
            # Comments go first: they may contain ';' or quotes that would split a statement.
            code = "\n".join(line.split("--", 1)[0] for line in schema.splitlines())
            for statement in code.split(";"):
                if statement.strip():
                    tx.run(statement)

    def _check_study(self) -> None:
        try:
            with self.read() as tx:
                found = tx.scalar("SELECT value FROM meta WHERE key = 'config'")
        except (sqlite3.DatabaseError,) as e:
            raise UserError(f"{self.target}: not an sr3 study database ({e}); "
                            "create one with `sr3 study create`") from None
        except Exception as e:  # psycopg errors: missing table etc.
            if self.postgres:
                raise UserError(f"{_redact(self.target)}: not an sr3 study database ({e})") from None
            raise
        if found is None:
            raise UserError(f"{self.target}: not an sr3 study database (no config); "
                            "create one with `sr3 study create`")

    def config(self) -> StudyConfig:
        with self.read() as tx:
            text = tx.scalar("SELECT value FROM meta WHERE key = 'config'")
        try:
            return StudyConfig.from_json(text)
        except UserError as e:  # range-checked on load too: a hand-edited or damaged study
            raise UserError(f"{_redact(self.target)}: invalid study config ({e}); "
                            "recreate the study with `sr3 study create`") from None

    def serve_key(self) -> bytes | None:
        """The secret of the per-session image copies (:mod:`.images`); None in studies made before it."""
        with self.read() as tx:
            value = tx.scalar("SELECT value FROM meta WHERE key = 'serve_key'")
        return bytes.fromhex(value) if value else None

    def blob_param(self, data: bytes):
        return data if self.postgres else sqlite3.Binary(data)


def _redact(url: str) -> str:
    """Hide a password in a database URL before it goes into an error message."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


# Columns of every answer joined with what it was about; the report, the admin
# export and the tests all read answers through this one query.
RESPONSE_COLUMNS = ("rater", "rater_index", "rater_task", "position", "task", "kind", "method",
                    "image_name", "trial", "real_side", "choice", "chose_real", "rt_ms", "answered_at")


def load_responses(tx: Tx) -> list[dict]:
    rows = tx.all(
        "SELECT r.id, r.idx, r.task, a.position, t.task, t.kind, t.method, t.image_name, t.id, "
        "       t.real_side, s.choice, s.rt_ms, s.answered_at "
        "FROM responses s JOIN assignments a ON a.id = s.assignment_id "
        "JOIN trials t ON t.id = a.trial_id JOIN raters r ON r.id = s.rater_id "
        "ORDER BY r.idx, a.position")
    out = []
    for (rater, idx, rtask, pos, task, kind, method, name, trial, real, choice, rt, at) in rows:
        out.append(dict(zip(RESPONSE_COLUMNS, (rater, idx, rtask, pos, task, kind, method, name, trial,
                                               real, choice, choice == real, rt, at))))
    return out


def load_raters(tx: Tx) -> list[dict]:
    """Every rater with the number of trials assigned and answered."""
    rows = tx.all(
        "SELECT r.id, r.idx, r.task, r.created_at, "
        "       (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = r.id), "
        "       (SELECT COUNT(*) FROM responses s WHERE s.rater_id = r.id) "
        "FROM raters r ORDER BY r.idx")
    return [dict(rater=r, rater_index=i, task=t, created_at=c, assigned=n, answered=a)
            for (r, i, t, c, n, a) in rows]
