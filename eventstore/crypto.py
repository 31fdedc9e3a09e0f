"""Encryption of shared secrets (SPEC §5): per-tenant data keys wrapped by a master key.

Envelope encryption means `ledger forget` only has to destroy one small data key
for a tenant's secrets to become unreadable, while the log (whose hash chain covers
ciphertext only) still verifies. Master keys rotate: the first configured key
wraps new data keys, the others still unwrap old ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventstore.data_keys import DataKeyStore
from eventstore.events import SealedSecret

_WRAP_FORMAT = b"\x01"
_KEY_ID_BYTES = 8
_NONCE_BYTES = 12
# format byte, key id, nonce and the 16-byte AES-GCM tag: anything shorter was cut.
_WRAPPED_MIN = 1 + _KEY_ID_BYTES + _NONCE_BYTES + 16


class CryptoError(Exception):
    """A key or ciphertext could not be used. Never carries key material."""


class DataKeyDestroyed(CryptoError):
    """The tenant was forgotten: its data key no longer exists."""


class MasterKeyUnavailable(CryptoError):
    """A data key was wrapped by a master key that is not configured (any more).

    A configuration error, not a forgotten tenant: put the key back in
    ``LEDGER_MASTER_KEY`` (or run ``ledger rewrap`` before dropping it).
    """

    def __init__(self, key_id: str) -> None:
        super().__init__(f"data key was wrapped by master key {key_id}, which is not configured")
        self.key_id = key_id


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"ledger-master-key-id" + key).digest()[:_KEY_ID_BYTES]


def key_id(key: bytes) -> str:
    """A master key's public name (16 hex digits), as stored in every key it wraps.

    A one-way digest of the key, so it can be logged and compared by operators
    without revealing key material.
    """
    return _key_id(key).hex()


def wrapped_key_id(wrapped: bytes) -> str | None:
    """The id of the master key that wrapped a data key, or None for an unknown format."""
    if not wrapped.startswith(_WRAP_FORMAT) or len(wrapped) < _WRAPPED_MIN:
        return None
    return wrapped[1 : 1 + _KEY_ID_BYTES].hex()


@dataclass(frozen=True)
class MasterKeys:
    """Master keys in rotation order: ``keys[0]`` wraps, every key unwraps."""

    keys: tuple[bytes, ...]

    @classmethod
    def parse(cls, setting: str) -> MasterKeys:
        keys: list[bytes] = []
        for index, part in enumerate(p.strip() for p in setting.split(",")):
            if not part:
                continue
            try:
                key = base64.b64decode(part, validate=True)
            except (binascii.Error, ValueError):
                raise CryptoError(f"master key #{index + 1} is not valid base64") from None
            if len(key) != 32:
                raise CryptoError(f"master key #{index + 1} must decode to 32 bytes")
            keys.append(key)
        if not keys:
            raise CryptoError("no master key configured")
        return cls(tuple(keys))

    def __repr__(self) -> str:  # never print key bytes
        return f"MasterKeys(<{len(self.keys)} keys>)"

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(key_id(k) for k in self.keys)

    @property
    def current_key_id(self) -> str:
        return key_id(self.keys[0])

    def wrap(self, stream_id: str, data_key: bytes) -> bytes:
        current = self.keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(current).encrypt(nonce, data_key, _wrap_ad(stream_id))
        return _WRAP_FORMAT + _key_id(current) + nonce + sealed

    def unwrap(self, stream_id: str, wrapped: bytes) -> bytes:
        """The data key; MasterKeyUnavailable when its master key is not configured,
        CryptoError when the wrapped key is damaged or belongs to another stream."""
        wrapped_by = wrapped_key_id(wrapped)
        if wrapped_by is None:
            raise CryptoError("unknown data key format")
        nonce = wrapped[1 + _KEY_ID_BYTES : 1 + _KEY_ID_BYTES + _NONCE_BYTES]
        body = wrapped[1 + _KEY_ID_BYTES + _NONCE_BYTES :]
        for key in self.keys:
            if secrets.compare_digest(key_id(key), wrapped_by):
                try:
                    return AESGCM(key).decrypt(nonce, body, _wrap_ad(stream_id))
                except InvalidTag:
                    raise CryptoError("data key does not belong to this stream") from None
        raise MasterKeyUnavailable(wrapped_by)

    def rewrap(self, stream_id: str, wrapped: bytes) -> bytes | None:
        """The data key wrapped by the current master key, or None when it already is.

        The key is unwrapped either way, so a damaged key never counts as current.
        Raises like ``unwrap``.
        """
        data_key = self.unwrap(stream_id, wrapped)
        if wrapped_key_id(wrapped) == self.current_key_id:
            return None
        return self.wrap(stream_id, data_key)


def _wrap_ad(stream_id: str) -> bytes:
    return b"ledger-data-key:" + stream_id.encode()


def secret_ad(stream_id: str, version: int) -> str:
    """Associated data binding a sealed secret to the event that carries it."""
    return f"{stream_id}#{version}"


def seal_secret(data_key: bytes, secret: str, ad: str) -> SealedSecret:
    nonce = os.urandom(_NONCE_BYTES)
    ct = AESGCM(data_key).encrypt(nonce, secret.encode(), ad.encode())
    return SealedSecret(
        alg="A256GCM",
        nonce=base64.b64encode(nonce).decode(),
        ct=base64.b64encode(ct).decode(),
        ad=ad,
    )


def open_secret(data_key: bytes, sealed: SealedSecret, expected_ad: str) -> str:
    # The AD is checked twice on purpose: the stored label must be the event's own,
    # and AES-GCM refuses a ciphertext moved from another stream or version.
    if sealed.alg != "A256GCM" or not secrets.compare_digest(
        sealed.ad.encode(), expected_ad.encode()
    ):
        raise CryptoError("sealed secret is bound to another event")
    try:
        plain = AESGCM(data_key).decrypt(
            base64.b64decode(sealed.nonce), base64.b64decode(sealed.ct), expected_ad.encode()
        )
    except (InvalidTag, binascii.Error, ValueError):
        raise CryptoError("sealed secret does not decrypt") from None
    return plain.decode()


class KeyRing:
    """Per-tenant data keys kept in the store, wrapped by the master keys."""

    def __init__(self, store: DataKeyStore, master: MasterKeys) -> None:
        self._store = store
        self._master = master

    @property
    def master_key_ids(self) -> tuple[str, ...]:
        return self._master.key_ids

    def data_key(self, stream_id: str, *, create: bool = False) -> bytes:
        wrapped = self._store.get_data_key(stream_id)
        if wrapped is None:
            if not create:
                raise DataKeyDestroyed(f"no data key for {stream_id}")
            # Two first installs racing: put_data_key keeps the first one stored.
            wrapped = self._store.put_data_key(
                stream_id, self._master.wrap(stream_id, os.urandom(32))
            )
        return self._master.unwrap(stream_id, wrapped)

    def stored_key(self, stream_id: str) -> bytes | None:
        """The stream's data key, or None when it has none (new, or forgotten)."""
        wrapped = self._store.get_data_key(stream_id)
        return None if wrapped is None else self.unwrap(stream_id, wrapped)

    def unwrap(self, stream_id: str, wrapped: bytes) -> bytes:
        """A data key read with its stream, opened (raises like ``MasterKeys.unwrap``)."""
        return self._master.unwrap(stream_id, wrapped)

    def new_key(self, stream_id: str) -> tuple[bytes, bytes]:
        """A fresh data key and its wrapped form, to be stored with the append
        (``EventStore.append(data_key=...)``) that first uses it."""
        key = os.urandom(32)
        return key, self._master.wrap(stream_id, key)

    def forget(self, stream_id: str) -> bool:
        return self._store.destroy_data_key(stream_id)


@dataclass(frozen=True)
class Unwrappable:
    """A data key that no configured master key opens: ``key_id`` names the master key
    that wrapped it (None when the stored key is damaged or not in a known format)."""

    stream_id: str
    key_id: str | None
    reason: str


@dataclass
class RewrapReport:
    current_key_id: str
    rewrapped: int = 0
    current: int = 0  # already wrapped by the current master key
    forgotten: int = 0  # destroyed by `ledger forget` while the rewrap ran
    changing: int = 0  # replaced by someone else on every attempt: run it again
    unwrappable: list[Unwrappable] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return (
            self.rewrapped + self.current + self.forgotten + self.changing + len(self.unwrappable)
        )

    @property
    def ok(self) -> bool:
        return not self.unwrappable and not self.changing


_SWAP_ATTEMPTS = 5


def rewrap_data_keys(
    store: DataKeyStore,
    master: MasterKeys,
    batch_size: int = 500,
    progress: Callable[[RewrapReport], None] | None = None,
) -> RewrapReport:
    """Re-wrap every data key under the current master key, so older ones can retire.

    Idempotent, and safe while the service runs: the data keys themselves never
    change (only their wrapping), and each is replaced by compare-and-swap, so a key
    destroyed by `forget` meanwhile stays destroyed and is never written back.
    """
    report = RewrapReport(current_key_id=master.current_key_id)
    after = ""
    while batch := store.list_data_keys(after, batch_size):
        for stream_id, wrapped in batch:
            _rewrap_one(store, master, stream_id, wrapped, report)
        after = batch[-1][0]
        if progress is not None:
            progress(report)
        if len(batch) < batch_size:
            break
    return report


def _rewrap_one(
    store: DataKeyStore, master: MasterKeys, stream_id: str, wrapped: bytes, report: RewrapReport
) -> None:
    for _attempt in range(_SWAP_ATTEMPTS):
        try:
            rewrapped = master.rewrap(stream_id, wrapped)
        except MasterKeyUnavailable as error:
            report.unwrappable.append(
                Unwrappable(stream_id, error.key_id, "master key not configured")
            )
            return
        except CryptoError as error:
            report.unwrappable.append(Unwrappable(stream_id, wrapped_key_id(wrapped), str(error)))
            return
        if rewrapped is None:
            report.current += 1
            return
        if store.swap_data_key(stream_id, wrapped, rewrapped):
            report.rewrapped += 1
            return
        latest = store.get_data_key(stream_id)
        if latest is None:
            report.forgotten += 1
            return
        wrapped = latest  # changed meanwhile (another rewrap): look again
    report.changing += 1


def load_or_create_master_key(path: Path) -> str:
    """The embedded default's master key: generated once into a 0600 file."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(os.urandom(32)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key
