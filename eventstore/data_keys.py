"""Data keys: one wrapped AES key per stream (SPEC §5).

Mutable by design, unlike the log: destroying a stream's key is how ``ledger forget``
makes its secrets unreadable while the chain still verifies. The keys are wrapped by
the master key before they reach a store (``eventstore.crypto``).
"""

from __future__ import annotations

import abc


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
        """Delete the stream's data key; True if there was one."""

    @abc.abstractmethod
    def list_data_keys(self, after: str = "", limit: int = 500) -> list[tuple[str, bytes]]:
        """(stream_id, wrapped) pairs in stream_id order after ``after``: one batch."""

    @abc.abstractmethod
    def swap_data_key(self, stream_id: str, expected: bytes, wrapped: bytes) -> bool:
        """Replace the stream's wrapped key only if it is still ``expected``
        (compare-and-swap: a key destroyed or changed meanwhile is left alone)."""
