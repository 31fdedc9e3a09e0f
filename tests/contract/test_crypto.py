"""Envelope encryption of shared secrets (SPEC §5): master keys, data keys, sealed secrets."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from app.ingest.connect.decider import fold
from eventstore import open_store
from eventstore.clock import utcnow
from eventstore.crypto import (
    CryptoError,
    DataKeyDestroyed,
    KeyRing,
    MasterKeys,
    MasterKeyUnavailable,
    key_id,
    load_or_create_master_key,
    open_secret,
    seal_secret,
    secret_ad,
    wrapped_key_id,
)
from eventstore.events import Installed, Metadata, SealedSecret, SecretRotated
from eventstore.store import EventStore
from eventstore.values import RecordedEvent

STREAM_A = "tenant:client-a"
STREAM_B = "tenant:client-b"
PREFIX = 1 + 8  # format byte + key id


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def new_key() -> bytes:
    return os.urandom(32)


def single(key: bytes) -> MasterKeys:
    return MasterKeys.parse(b64(key))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with open_store(f"sqlite:///{tmp_path / 'x.db'}") as opened:
        yield opened


# ---------------------------------------------------------------- MasterKeys.parse


def test_parse_one_key() -> None:
    key = new_key()
    assert MasterKeys.parse(b64(key)).keys == (key,)


def test_parse_several_keys_keeps_their_order_and_ignores_blanks() -> None:
    k1, k2, k3 = new_key(), new_key(), new_key()
    parsed = MasterKeys.parse(f" {b64(k1)} ,{b64(k2)},, {b64(k3)},")
    assert parsed.keys == (k1, k2, k3)


@pytest.mark.parametrize("setting", ["", " ", ",", " , ,"])
def test_parse_without_any_key_fails(setting: str) -> None:
    with pytest.raises(CryptoError, match="no master key"):
        MasterKeys.parse(setting)


@pytest.mark.parametrize(
    "bad",
    [
        "not base64!",
        "%%%%",
        base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),  # '-' and '_' are not base64
        b64(new_key())[:-1],  # bad padding
    ],
)
def test_parse_refuses_bad_base64_without_echoing_it(bad: str) -> None:
    with pytest.raises(CryptoError) as raised:
        MasterKeys.parse(bad)
    assert "base64" in str(raised.value)
    assert bad not in str(raised.value)


@pytest.mark.parametrize("length", [1, 16, 31, 33, 64])
def test_parse_refuses_keys_that_are_not_32_bytes(length: int) -> None:
    with pytest.raises(CryptoError, match="32 bytes"):
        MasterKeys.parse(b64(os.urandom(length)))


def test_parse_names_the_bad_key_by_position() -> None:
    bad = b64(os.urandom(16))
    with pytest.raises(CryptoError, match="#2") as raised:
        MasterKeys.parse(f"{b64(new_key())},{bad}")
    assert bad not in str(raised.value)


def test_repr_shows_no_key_material() -> None:
    k1, k2 = new_key(), new_key()
    keys = MasterKeys.parse(f"{b64(k1)},{b64(k2)}")
    for text in (repr(keys), str(keys), f"{keys}", repr([keys])):
        for key in (k1, k2):
            assert b64(key) not in text
            assert key.hex() not in text
            assert repr(key) not in text
    assert "2" in repr(keys)


# ---------------------------------------------------------------- wrap / unwrap


def test_wrap_unwrap_round_trip() -> None:
    master = single(new_key())
    data_key = new_key()

    wrapped = master.wrap(STREAM_A, data_key)

    assert data_key not in wrapped
    assert master.unwrap(STREAM_A, wrapped) == data_key


def test_wrapping_is_randomised() -> None:
    master = single(new_key())
    data_key = new_key()
    first, second = master.wrap(STREAM_A, data_key), master.wrap(STREAM_A, data_key)

    assert first != second
    assert first[:PREFIX] == second[:PREFIX]  # same format byte and key id
    assert master.unwrap(STREAM_A, first) == master.unwrap(STREAM_A, second) == data_key


def test_key_id_prefix_differs_between_master_keys() -> None:
    data_key = new_key()
    a = single(new_key()).wrap(STREAM_A, data_key)
    b = single(new_key()).wrap(STREAM_A, data_key)
    assert a[:1] == b[:1] == b"\x01"
    assert a[1:PREFIX] != b[1:PREFIX]


def test_rotation_old_wraps_still_unwrap_and_new_wraps_use_the_new_key() -> None:
    old_key, new = new_key(), new_key()
    data_key = new_key()
    wrapped_by_old = single(old_key).wrap(STREAM_A, data_key)

    rotated = MasterKeys.parse(f"{b64(new)},{b64(old_key)}")

    assert rotated.unwrap(STREAM_A, wrapped_by_old) == data_key
    rewrapped = rotated.wrap(STREAM_A, data_key)
    assert rewrapped[:PREFIX] == single(new).wrap(STREAM_A, data_key)[:PREFIX]
    assert rewrapped[:PREFIX] != wrapped_by_old[:PREFIX]
    assert single(new).unwrap(STREAM_A, rewrapped) == data_key
    with pytest.raises(CryptoError):
        single(old_key).unwrap(STREAM_A, rewrapped)


def test_unwrap_with_only_an_unrelated_key_fails() -> None:
    wrapped = single(new_key()).wrap(STREAM_A, new_key())
    with pytest.raises(CryptoError, match="not configured"):
        single(new_key()).unwrap(STREAM_A, wrapped)


def test_wrapped_key_of_one_stream_does_not_unwrap_for_another() -> None:
    master = single(new_key())
    wrapped = master.wrap(STREAM_A, new_key())
    with pytest.raises(CryptoError):
        master.unwrap(STREAM_B, wrapped)


@pytest.mark.parametrize("index", [PREFIX, PREFIX + 12, -1])
def test_tampered_wrapped_key_fails(index: int) -> None:
    master = single(new_key())
    wrapped = bytearray(master.wrap(STREAM_A, new_key()))
    wrapped[index] ^= 0x01
    with pytest.raises(CryptoError):
        master.unwrap(STREAM_A, bytes(wrapped))


@pytest.mark.parametrize("wrapped", [b"", b"\x02" + b"\x00" * 60, b"garbage"])
def test_unknown_wrap_format_fails(wrapped: bytes) -> None:
    with pytest.raises(CryptoError):
        single(new_key()).unwrap(STREAM_A, wrapped)


def test_truncated_wrapped_key_fails_with_crypto_error() -> None:
    master = single(new_key())
    wrapped = master.wrap(STREAM_A, new_key())
    with pytest.raises(CryptoError):
        master.unwrap(STREAM_A, wrapped[: PREFIX + 4])


# ---------------------------------------------------------------- key ids and rewrap


def test_key_id_is_a_stable_public_digest_of_the_master_key() -> None:
    key = new_key()
    assert key_id(key) == key_id(bytes(key))
    assert len(key_id(key)) == 16 and int(key_id(key), 16) >= 0
    assert key_id(key) != key_id(new_key())
    assert key_id(key) not in (key.hex(), b64(key))
    assert key.hex()[:16] != key_id(key)  # a digest, not a prefix of the key


def test_wrapped_key_carries_the_id_of_the_master_key_that_wrapped_it() -> None:
    old, new = new_key(), new_key()
    rotated = MasterKeys.parse(f"{b64(new)},{b64(old)}")
    assert rotated.key_ids == (key_id(new), key_id(old))
    assert rotated.current_key_id == key_id(new)
    assert wrapped_key_id(rotated.wrap(STREAM_A, new_key())) == key_id(new)
    assert wrapped_key_id(single(old).wrap(STREAM_A, new_key())) == key_id(old)


@pytest.mark.parametrize("wrapped", [b"", b"garbage", b"\x02" + b"\x00" * 60, b"\x01" * 20])
def test_wrapped_key_id_of_an_unknown_format_is_none(wrapped: bytes) -> None:
    assert wrapped_key_id(wrapped) is None


def test_a_key_wrapped_before_key_ids_were_named_still_unwraps() -> None:
    # Made by the code before this change (format 1: key id, nonce, AES-GCM).
    master = MasterKeys.parse(b64(bytes(range(32))))
    wrapped = bytes.fromhex(
        "01a2ea318406831644d8bddbd1c81b2b5235af2251bde482a89a71f502712501f6f2a2248d7f075b"
        "6d60cf680c37c97beec437291f380fe2324e5764979d60a4e988cd4e05"
    )
    assert master.unwrap("tenant:vector", wrapped) == bytes(range(100, 132))
    assert wrapped_key_id(wrapped) == key_id(bytes(range(32))) == "a2ea318406831644"


def test_missing_master_key_is_named_by_id_never_by_bytes() -> None:
    dropped = new_key()
    wrapped = single(dropped).wrap(STREAM_A, new_key())
    with pytest.raises(MasterKeyUnavailable) as raised:
        single(new_key()).unwrap(STREAM_A, wrapped)
    assert raised.value.key_id == key_id(dropped)
    assert key_id(dropped) in str(raised.value)
    for material in (b64(dropped), dropped.hex()):
        assert material not in str(raised.value)


def test_a_damaged_key_is_not_reported_as_a_missing_master_key() -> None:
    master = single(new_key())
    wrapped = bytearray(master.wrap(STREAM_A, new_key()))
    wrapped[-1] ^= 0x01
    with pytest.raises(CryptoError) as raised:
        master.unwrap(STREAM_A, bytes(wrapped))
    assert not isinstance(raised.value, MasterKeyUnavailable)


def test_rewrap_moves_a_key_to_the_current_master_key_and_keeps_the_data_key() -> None:
    old, new = new_key(), new_key()
    data_key = new_key()
    wrapped = single(old).wrap(STREAM_A, data_key)
    rotated = MasterKeys.parse(f"{b64(new)},{b64(old)}")

    rewrapped = rotated.rewrap(STREAM_A, wrapped)

    assert rewrapped is not None and wrapped_key_id(rewrapped) == key_id(new)
    assert single(new).unwrap(STREAM_A, rewrapped) == data_key
    assert rotated.rewrap(STREAM_A, rewrapped) is None  # already current: nothing to do


def test_rewrap_refuses_what_it_cannot_unwrap() -> None:
    wrapped = single(new_key()).wrap(STREAM_A, new_key())
    with pytest.raises(MasterKeyUnavailable):
        single(new_key()).rewrap(STREAM_A, wrapped)
    current = single(new_key())
    damaged = bytearray(current.wrap(STREAM_A, new_key()))
    damaged[-1] ^= 0x01
    with pytest.raises(CryptoError):  # a damaged key never counts as current
        current.rewrap(STREAM_A, bytes(damaged))


# ---------------------------------------------------------------- seal / open


@pytest.mark.parametrize("secret", ["s3cr3t", "", "ünïcödé 🔑", "x" * 1024])
def test_seal_open_round_trip(secret: str) -> None:
    data_key = new_key()
    ad = secret_ad(STREAM_A, 3)

    sealed = seal_secret(data_key, secret, ad)

    assert sealed.alg == "A256GCM"
    assert sealed.ad == ad == f"{STREAM_A}#3"
    assert open_secret(data_key, sealed, ad) == secret


def test_sealed_secret_does_not_contain_the_plain_text() -> None:
    secret = "a-very-recognisable-shared-secret"
    sealed = seal_secret(new_key(), secret, secret_ad(STREAM_A, 1))
    encoded = msgspec.json.encode(sealed)
    assert secret.encode() not in encoded
    assert b64(secret.encode()) not in encoded.decode()


def test_sealing_is_randomised() -> None:
    data_key = new_key()
    ad = secret_ad(STREAM_A, 1)
    first, second = seal_secret(data_key, "same", ad), seal_secret(data_key, "same", ad)
    assert first.nonce != second.nonce
    assert first.ct != second.ct


def test_secret_ad_binds_stream_and_version() -> None:
    assert secret_ad(STREAM_A, 1) != secret_ad(STREAM_A, 2)
    assert secret_ad(STREAM_A, 1) != secret_ad(STREAM_B, 1)


@pytest.mark.parametrize(
    "expected_ad", [secret_ad(STREAM_A, 2), secret_ad(STREAM_B, 1), "", STREAM_A]
)
def test_open_with_another_expected_ad_fails(expected_ad: str) -> None:
    data_key = new_key()
    sealed = seal_secret(data_key, "s3cr3t", secret_ad(STREAM_A, 1))
    with pytest.raises(CryptoError):
        open_secret(data_key, sealed, expected_ad)


@pytest.mark.parametrize("moved_to", [secret_ad(STREAM_A, 2), secret_ad(STREAM_B, 1)])
def test_ciphertext_moved_to_another_event_fails(moved_to: str) -> None:
    # Copying the ciphertext into another event and relabelling its ad passes the label
    # check; AES-GCM itself must refuse it.
    data_key = new_key()
    sealed = seal_secret(data_key, "s3cr3t", secret_ad(STREAM_A, 1))
    moved = msgspec.structs.replace(sealed, ad=moved_to)
    with pytest.raises(CryptoError, match="does not decrypt"):
        open_secret(data_key, moved, moved_to)


def _flip_first_byte(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[0] ^= 0x01
    return b64(bytes(raw))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: msgspec.structs.replace(s, ct=_flip_first_byte(s.ct)),
        lambda s: msgspec.structs.replace(s, nonce=_flip_first_byte(s.nonce)),
        lambda s: msgspec.structs.replace(s, ct=s.ct[:-8]),
        lambda s: msgspec.structs.replace(s, ct="not base64!"),
        lambda s: msgspec.structs.replace(s, nonce=""),
        lambda s: msgspec.structs.replace(s, alg="A128GCM"),
    ],
    ids=["ct-bit", "nonce-bit", "ct-truncated", "ct-not-base64", "nonce-empty", "alg"],
)
def test_tampered_sealed_secret_fails(tamper: Callable[[SealedSecret], SealedSecret]) -> None:
    data_key = new_key()
    ad = secret_ad(STREAM_A, 1)
    sealed = seal_secret(data_key, "s3cr3t", ad)
    tampered = tamper(sealed)
    assert isinstance(tampered, SealedSecret) and tampered != sealed
    with pytest.raises(CryptoError) as raised:
        open_secret(data_key, tampered, ad)
    assert "s3cr3t" not in str(raised.value)


def test_open_with_another_data_key_fails() -> None:
    ad = secret_ad(STREAM_A, 1)
    sealed = seal_secret(new_key(), "s3cr3t", ad)
    with pytest.raises(CryptoError):
        open_secret(new_key(), sealed, ad)


def test_seal_open_round_trip_for_a_non_ascii_stream() -> None:
    data_key = new_key()
    ad = secret_ad("tenant:café-ключ", 1)
    assert open_secret(data_key, seal_secret(data_key, "s3cr3t", ad), ad) == "s3cr3t"


def _recorded(version: int, data: Installed | SecretRotated) -> RecordedEvent:
    return RecordedEvent(
        position=version,
        stream_id=STREAM_A,
        version=version,
        type=type(data).__name__,
        schema_version=1,
        data=data,
        metadata=Metadata(),
        recorded_at=utcnow(),
        hash="",
    )


def test_a_secret_opens_only_with_the_version_of_the_event_that_carried_it() -> None:
    data_key = new_key()
    first = seal_secret(data_key, "first", secret_ad(STREAM_A, 1))
    second = seal_secret(data_key, "second", secret_ad(STREAM_A, 2))
    installed = Installed("app", "client-a", "https://a.atlassian.net", first, {})
    stream = [_recorded(1, installed), _recorded(2, SecretRotated(second))]

    state = fold(STREAM_A, stream)
    assert state.secret is not None and state.secret_version == 2
    assert open_secret(data_key, state.secret, secret_ad(STREAM_A, 2)) == "second"

    # The first ciphertext, label and all, re-appended as version 3: it carries its own
    # (valid) associated data, but not the data of the event that now carries it.
    replayed = fold(STREAM_A, [*stream, _recorded(3, SecretRotated(first))])
    assert replayed.secret == first and replayed.secret_version == 3
    assert open_secret(data_key, first, first.ad) == "first"  # what the old check did
    with pytest.raises(CryptoError):
        open_secret(data_key, first, secret_ad(STREAM_A, replayed.secret_version))


# ---------------------------------------------------------------- the master key file


def test_load_or_create_master_key_creates_a_private_file_once(tmp_path: Path) -> None:
    path = tmp_path / "var" / "master.key"

    first = load_or_create_master_key(path)

    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(MasterKeys.parse(first).keys[0]) == 32
    content = path.read_bytes()

    second = load_or_create_master_key(path)

    assert second == first
    assert path.read_bytes() == content
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_or_create_master_key_keys_differ_between_installs(tmp_path: Path) -> None:
    a = load_or_create_master_key(tmp_path / "a" / "master.key")
    b = load_or_create_master_key(tmp_path / "b" / "master.key")
    assert a != b


def test_load_or_create_master_key_reads_an_existing_file(tmp_path: Path) -> None:
    key = b64(new_key())
    path = tmp_path / "master.key"
    path.write_text(key + "\n")
    assert load_or_create_master_key(path) == key


# ---------------------------------------------------------------- KeyRing


def test_keyring_creates_a_data_key_once(store: EventStore) -> None:
    ring = KeyRing(store, single(new_key()))

    created = ring.data_key(STREAM_A, create=True)

    assert len(created) == 32
    assert ring.data_key(STREAM_A) == created
    assert ring.data_key(STREAM_A, create=True) == created
    stored = store.get_data_key(STREAM_A)
    assert stored is not None and created not in stored  # only the wrapped form is stored


def test_keyring_data_keys_are_per_stream(store: EventStore) -> None:
    ring = KeyRing(store, single(new_key()))
    assert ring.data_key(STREAM_A, create=True) != ring.data_key(STREAM_B, create=True)


def test_keyring_without_create_refuses_an_unknown_stream(store: EventStore) -> None:
    ring = KeyRing(store, single(new_key()))
    with pytest.raises(DataKeyDestroyed):
        ring.data_key(STREAM_A)


def test_keyring_survives_a_restart_and_a_master_key_rotation(
    store: EventStore, tmp_path: Path
) -> None:
    old_key, new = new_key(), new_key()
    created = KeyRing(store, single(old_key)).data_key(STREAM_A, create=True)

    rotated = KeyRing(store, MasterKeys.parse(f"{b64(new)},{b64(old_key)}"))
    assert rotated.data_key(STREAM_A) == created

    with pytest.raises(CryptoError):
        KeyRing(store, single(new)).data_key(STREAM_A)


def test_forget_destroys_the_data_key(store: EventStore) -> None:
    ring = KeyRing(store, single(new_key()))
    data_key = ring.data_key(STREAM_A, create=True)
    other = ring.data_key(STREAM_B, create=True)
    sealed = seal_secret(data_key, "s3cr3t", secret_ad(STREAM_A, 1))

    assert ring.forget(STREAM_A) is True

    with pytest.raises(DataKeyDestroyed):
        ring.data_key(STREAM_A)
    assert ring.forget(STREAM_A) is False
    assert ring.data_key(STREAM_B) == other  # other tenants are untouched
    # a new key may be created later, but it does not open the old secrets
    fresh = ring.data_key(STREAM_A, create=True)
    assert fresh != data_key
    with pytest.raises(CryptoError):
        open_secret(fresh, sealed, secret_ad(STREAM_A, 1))
