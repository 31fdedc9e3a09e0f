"""Which streams this process has seen exist: where a read is needed before deciding.

The shell (``app.ingest.shell.run_with``) normally reads a stream before it decides. Given a
``KnownStreams``, it decides a stream this process has never seen exist as an *empty*
stream, without reading it, and appends in one round trip: most calls for a stream
nobody here knows are its first (a first install).

The guess is checked by the append, never trusted: its expected version is 0, so a
stream that does exist makes the append conflict, and the shell reads and decides
again. A decision on the guess that appends nothing (a refusal, a skip, a repeat) is
never answered: the shell reads and decides again, so nothing is refused on a guess.

Only existence is remembered, never a stream's state: a state would carry the
tenant's wrapped data key, which ``ledger forget`` may destroy behind this process's
back (the secrets must become unreadable at once), and a stream that exists is read
before every decision, as without this. Bounded: least recently used out.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

MAX_STREAMS: Final = 100_000  # stream ids: some 10 MB at most


class KnownStreams:
    """One per process and decider."""

    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self._max_streams = max_streams
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.guesses = 0  # decisions on a stream guessed empty
        self.wrong = 0  # ... that met a stream after all

    def __len__(self) -> int:
        return len(self._seen)

    def exists(self, stream_id: str) -> bool:
        """Whether this process has seen the stream hold events (recently enough)."""
        if stream_id not in self._seen:
            return False
        self._seen.move_to_end(stream_id)
        return True

    def saw(self, stream_id: str) -> None:
        """The stream holds events."""
        self._seen[stream_id] = None
        self._seen.move_to_end(stream_id)
        if len(self._seen) > self._max_streams:
            self._seen.popitem(last=False)
