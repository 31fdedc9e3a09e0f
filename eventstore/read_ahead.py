"""Pages read one step ahead by a helper thread while the caller works on the page before
(the server builds the next page on another core; the driver waits without the GIL).
Used by the store's full reads (``read_all``, ``read_chain``) and the rebuild's lean
reader (``projections.lean``). Written here rather than with ``concurrent.futures``:
a reader that stops early must release the thread at once, and an error of the pages
must be raised in the reader, after the pages before it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
P = TypeVar("P", bound=Sequence[Any])


def paged(
    fetch: Callable[[int, int], P],
    after: int,
    size: int,
    position_of: Callable[[Any], int],
) -> Iterator[P]:
    """Pages of at most ``size`` rows after position ``after`` (``fetch(after, size)``),
    until a page comes back short; ``position_of`` tells a row's log position."""
    while True:
        page = fetch(after, size)
        if page:
            yield page
        if len(page) < size:
            return
        after = position_of(page[-1])


def read_ahead(
    pages: Iterator[T], *, depth: int, name: str, stop: threading.Event | None = None
) -> Iterator[T]:
    """``pages`` as they come, fetched up to ``depth`` ahead by a daemon thread. Setting
    ``stop`` (or closing this generator) lets the thread end at its next hand-over."""
    stopped = stop if stop is not None else threading.Event()
    box: queue.Queue[T | BaseException | None] = queue.Queue(maxsize=depth)

    def hand_over(item: T | BaseException | None) -> bool:
        """Put ``item`` for the reader; False once it has stopped reading."""
        while not stopped.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for page in pages:
                if stopped.is_set() or not hand_over(page):
                    return
            hand_over(None)
        except BaseException as error:  # handed to the reader, raised there
            hand_over(error)

    threading.Thread(target=fetch, name=name, daemon=True).start()
    try:
        while (item := box.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()
