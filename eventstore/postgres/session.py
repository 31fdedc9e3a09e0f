"""How the PostgreSQL store talks to its server, for the sync store and the async log
alike: the connection URL, the settings that bound every wait, and the one mapping of
driver errors to store errors."""

from __future__ import annotations

import select
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from eventstore.errors import StoreError, StoreFault, StoreMissing, StoreUnavailable
from eventstore.schema_status import describe_url

# SQLSTATEs after which the same work may succeed later: the host gets a 503 and
# retries. Whole classes: 08 connection exception, 53 insufficient resources (53300
# too_many_connections, disk full), 57 operator intervention (57P01 admin_shutdown,
# 57P02 crash_shutdown, 57P03 cannot_connect_now, 57014 statement timeout). Single
# codes: 25006 read_only_sql_transaction (a demoted primary during a failover),
# 25P03 idle_in_transaction_session_timeout, 40001 serialization_failure, 40P01
# deadlock_detected, 55P03 lock_not_available.
RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})


RETRYABLE_SQLSTATES = frozenset({"25006", "25P03", "40001", "40P01", "55P03"})


# How long a readiness ping or a rejection row waits for a pooled connection.
QUICK_TIMEOUT_SECONDS = 1.0


def translate_error(exc: Exception) -> StoreError | None:
    """The one mapping of PostgreSQL driver errors to store errors (see error_boundary)."""
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if (
            isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            or state in RETRYABLE_SQLSTATES
            or (state is not None and state[:2] in RETRYABLE_SQLSTATE_CLASSES)
        ):
            return StoreUnavailable("PostgreSQL is unavailable")
        return StoreFault(f"PostgreSQL refused the work ({type(exc).__name__})", state)
    if isinstance(exc, UnicodeError | OverflowError):
        # A value the driver cannot send (a lone surrogate, an integer beyond bigint).
        return StoreFault(f"PostgreSQL cannot hold a value ({type(exc).__name__})")
    return None


def libpq_url(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1] if url.startswith("postgres://") else url


def session_options(statement_timeout: float) -> dict[str, Any]:
    """Connection settings that bound every wait on the database.

    connect_timeout bounds a connection attempt; statement_timeout a statement (a
    lock wait included); idle_in_transaction_session_timeout a transaction a client
    abandoned while holding the head lock; keepalives and tcp_user_timeout a peer
    that vanished without closing the connection (a black-holed primary).
    """
    statement_ms = max(1, int(statement_timeout * 1000))
    return {
        "autocommit": True,
        "options": (
            f"-c statement_timeout={statement_ms}"
            f" -c idle_in_transaction_session_timeout={statement_ms * 4}"
        ),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": statement_ms + 5000,
    }


def probe(conn: psycopg.Connection[Any]) -> None:
    """Raise unless the idle connection still works; no round trip when nothing is amiss.

    An idle connection's socket has nothing to read unless the server spoke first: a
    termination (admin shutdown, restart, failover) sends an error and closes it. Only
    then is the full check (ConnectionPool.check_connection, an empty query) run. One
    round trip per checkout would cost about a fifth of the append rate.
    """
    if conn.closed or conn.pgconn.status != psycopg.pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


# What a server says when it refuses a connection for good: retrying will not help.
_PERMANENT_REFUSALS = (
    "does not exist",
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "permission denied",
    "is not permitted to log in",
    "password is required",
)


def connect_once(url: str, timeout: float) -> None:
    """Open and close one connection, so that a refusal is told apart from silence:
    no such database (StoreMissing), a refused role or password (StoreFault), a server
    that does not answer (StoreUnavailable). libpq's words name hosts, roles and
    databases, never a password."""
    try:
        psycopg.connect(libpq_url(url), connect_timeout=max(1, int(timeout))).close()
    except psycopg.Error as exc:
        raise connection_refusal(exc, url) from exc


def connection_refusal(exc: Exception, url: str) -> StoreError:
    where = describe_url(url)
    message = str(exc)
    fatal = message.partition("FATAL:")[2].strip().splitlines()
    reason = fatal[0].strip() if fatal else ""
    if reason.startswith("database ") and reason.endswith("does not exist"):
        return StoreMissing(
            f"{where}: PostgreSQL says {reason}; create it, then run `ledger migrate`"
        )
    if any(words in reason for words in _PERMANENT_REFUSALS):
        return StoreFault(
            f"{where}: PostgreSQL refused the connection: {reason};"
            " check the role and password in LEDGER_DATABASE_URL",
            "28000",
        )
    last = [line.strip() for line in message.splitlines() if line.strip()]
    said = reason or (last[0].rpartition("failed:")[2].strip() if last else type(exc).__name__)
    return StoreUnavailable(f"{where}: PostgreSQL did not answer ({said})")
