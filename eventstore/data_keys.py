"""Data keys: one wrapped AES key per stream (SPEC §5).

Mutable by design, unlike the log: destroying a stream's key is how ``ledger forget``
makes its secrets unreadable while the chain still verifies. The keys are wrapped by
the master key before they reach a store (``eventstore.crypto``).
"""

from __future__ import annotations

import abc

from eventstore.errors import StoreError


class KeyCopiesRemain(StoreError):
    """The data key's row is gone, but the store's files may still hold its old bytes
    (SQLite could not checkpoint its WAL, or PostgreSQL could not lock the table to
    rewrite it, while other work held on). Destroying again finishes the job.
    ``destroyed``: whether there was a key to destroy (as ``destroy_data_key`` returns)."""

    retryable = True

    def __init__(self, message: str, destroyed: bool = False) -> None:
        super().__init__(message)
        self.destroyed = destroyed


class DataKeyStore(abc.ABC):
    """Wrapped data keys by stream id."""

    @abc.abstractmethod
    def get_data_key(self, stream_id: str) -> bytes | None:
        """The stream's wrapped data key, or None."""

    @abc.abstractmethod
    def put_data_key(self, stream_id: str, wrapped: bytes) -> bytes:
        """Store a wrapped data key unless one exists; return the one in force."""

    @abc.abstractmethod
    def destroy_data_key(self, stream_id: str) -> bool:
        """Destroy the stream's data key; True if there was one.

        Destroying means destroying: the wrapped key is overwritten in place (same
        length, zero bytes) before its row is deleted, and then the store's own copies
        go too (SQLite: secure_delete and a WAL checkpoint that truncates the WAL;
        PostgreSQL: the table rewritten, which no dead tuple survives). The scrub runs
        even when there was no key, so calling it again finishes an interrupted one;
        KeyCopiesRemain when it could not finish now.
        """

    @abc.abstractmethod
    def list_data_keys(self, after: str = "", limit: int = 500) -> list[tuple[str, bytes]]:
        """(stream_id, wrapped) pairs in stream_id order after ``after``: one batch."""

    @abc.abstractmethod
    def swap_data_key(self, stream_id: str, expected: bytes, wrapped: bytes) -> bool:
        """Replace the stream's wrapped key only if it is still ``expected``
        (compare-and-swap: a key destroyed or changed meanwhile is left alone)."""
