"""The encryption envelope and the keyring, without a database."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy.dialects import sqlite

from convostore import codec, encryption
from convostore.encryption import Keyring, decode_key, generate_key
from convostore.errors import (
    ConfigurationError,
    DecryptionError,
    EncryptionError,
    KeyNotFoundError,
    SerializationError,
)
from convostore.sql.profile import EngineProfile, store_profile
from convostore.sql.types import ClearOnlyText, CompressedJSON, SealableText

K1, K2 = decode_key(generate_key()), decode_key(generate_key())
VALUE = {"text": "hello " * 200, "n": 1}


def test_envelope_round_trip_compresses_then_encrypts() -> None:
    ring = Keyring({"k1": K1}, current="k1")
    inner = codec.encode(VALUE)
    sealed = ring.seal(inner)
    assert sealed[0] == encryption.ENVELOPE
    assert sealed[1] == 2
    assert sealed[2:4] == b"k1"
    assert encryption.key_id_of(sealed) == "k1"
    assert encryption.key_id_of(inner) is None
    assert ring.open(sealed) == inner
    assert codec.decode(encryption.open_payload(sealed, ring)) == VALUE
    # The inner payload is compressed (zstd) before it is encrypted.
    assert inner[0] == codec.ZSTD
    assert len(sealed) == len(inner) + 2 + 2 + 12 + 16
    # A fresh nonce per value: the same payload never encrypts the same way twice.
    assert ring.seal(inner) != sealed


@pytest.mark.parametrize("at", [0, 1, 2, 5, 20, -1])
def test_any_changed_byte_is_a_typed_error_never_garbage(at: int) -> None:
    ring = Keyring({"k1": K1, "k2": K2}, current="k1")
    sealed = bytearray(ring.seal(codec.encode(VALUE)))
    sealed[at] ^= 0x01
    # A changed header byte is no longer an envelope: the codec refuses it instead.
    with pytest.raises(SerializationError if at == 0 else EncryptionError):
        codec.decode(encryption.open_payload(bytes(sealed), ring))


def test_truncated_envelope_is_a_decryption_error() -> None:
    ring = Keyring({"k1": K1}, current="k1")
    sealed = ring.seal(codec.encode(VALUE))
    for cut in (1, 3, 17, len(sealed) - 1):
        with pytest.raises(DecryptionError):
            ring.open(sealed[:cut])


def test_wrong_and_missing_keys_raise_typed_errors() -> None:
    sealed = Keyring({"k1": K1}, current="k1").seal(b"\x01{}")
    with pytest.raises(DecryptionError, match="'k1'"):
        Keyring({"k1": K2}, current="k1").open(sealed)
    with pytest.raises(KeyNotFoundError, match="'k1'"):
        Keyring({"k2": K2}, current="k2").open(sealed)
    with pytest.raises(KeyNotFoundError, match="no keyring"):
        encryption.open_payload(sealed, None)
    # Without a keyring the codec itself refuses an envelope, typed.
    with pytest.raises(KeyNotFoundError):
        codec.decode(sealed)


def test_callable_keys_are_cached_and_unknown_ids_asked_again() -> None:
    asked: list[str] = []

    def kms(key_id: str) -> bytes | None:
        asked.append(key_id)
        return {"k1": K1}.get(key_id)

    ring = Keyring(kms, current="k1")
    sealed = ring.seal(b"\x01[]")
    assert ring.open(sealed) == ring.open(sealed) == b"\x01[]"
    assert asked == ["k1"]
    other = Keyring({"k9": K2}, current="k9").seal(b"\x01[]")
    for _ in range(2):
        with pytest.raises(KeyNotFoundError):
            ring.open(other)
    assert asked == ["k1", "k9", "k9"]


def test_keyring_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        Keyring({"k1": b"short"}, current="k1")
    with pytest.raises(ConfigurationError, match="not in the keyring"):
        Keyring({"k1": K1}, current="k2")
    with pytest.raises(ConfigurationError, match="key id"):
        Keyring({"bad id": K1}, current="bad id")
    with pytest.raises(ConfigurationError, match="current key"):
        Keyring({"k1": K1}, current=None, clear_text=False)
    with pytest.raises(ConfigurationError, match="no current key"):
        Keyring({"k1": K1}, current=None).seal(b"\x01{}")
    assert "K1" not in repr(Keyring({"k1": K1}, current="k1"))


def test_from_env() -> None:
    one, two = generate_key(), base64.urlsafe_b64encode(K2).decode()
    ring = Keyring.from_env(
        {encryption.KEYS_ENV: f"old:{one}, new:{two}", encryption.KEY_ENV: "new"}
    )
    assert (ring.current, ring.clear_text) == ("new", True)
    assert ring.open(Keyring({"new": K2}, current="new").seal(b"\x01{}")) == b"\x01{}"
    single = Keyring.from_env(
        {encryption.KEYS_ENV: f"only:{one}", encryption.CLEAR_TEXT_ENV: "false"}
    )
    assert (single.current, single.clear_text) == ("only", False)
    for env, match in (
        ({}, "not set"),
        ({encryption.KEYS_ENV: "nocolon"}, "id:base64key"),
        ({encryption.KEYS_ENV: "a:!!!"}, "base64"),
        ({encryption.KEYS_ENV: f"a:{one},b:{two}"}, "current key"),
    ):
        with pytest.raises(ConfigurationError, match=match):
            Keyring.from_env(env)


def test_sealed_text_and_the_prefix_of_clear_text() -> None:
    ring = Keyring({"k1": K1}, current="k1")
    sealed = encryption.seal_text("secret text", ring)
    assert sealed.startswith(encryption.TEXT_PREFIX)
    assert "secret" not in sealed
    assert encryption.open_text(sealed, ring) == "secret text"
    with pytest.raises(KeyNotFoundError):
        encryption.open_text(sealed, None)
    # Clear text that merely starts with the prefix reads back as it is.
    lookalike = encryption.TEXT_PREFIX + "not base64 at all"
    assert encryption.open_text(lookalike, None) == lookalike


def test_types_seal_on_a_dialect_with_a_keyring() -> None:
    dialect = sqlite.dialect()
    payload, text, preview = CompressedJSON(), SealableText(), ClearOnlyText(100)
    # No keyring: plain, as before.
    assert payload.process_bind_param(VALUE, dialect) == codec.encode(VALUE)
    assert text.process_bind_param("hi", dialect) == "hi"
    ring = Keyring({"k1": K1}, current="k1", clear_text=False)
    store_profile(dialect, EngineProfile(family="sqlite", keyring=ring))  # as create_engine
    stored = payload.process_bind_param(VALUE, dialect)
    assert stored is not None
    assert encryption.key_id_of(stored) == "k1"
    assert payload.process_result_value(stored, dialect) == VALUE
    assert payload.process_result_value(codec.encode([1]), dialect) == [1]  # plain rows read
    sealed = text.process_bind_param("hi", dialect)
    assert sealed is not None
    assert sealed != "hi"
    assert text.process_result_value(sealed, dialect) == "hi"
    assert preview.process_bind_param("a preview", dialect) is None
    assert not encryption.clear_text_allowed(dialect)
    # clear_text=True: text stays clear, unless it looks sealed (then it is sealed).
    store_profile(
        dialect, EngineProfile(family="sqlite", keyring=Keyring({"k1": K1}, current="k1"))
    )
    assert text.process_bind_param("hi", dialect) == "hi"
    tricky = encryption.TEXT_PREFIX + "x"
    stored_tricky = text.process_bind_param(tricky, dialect)
    assert stored_tricky != tricky
    assert text.process_result_value(stored_tricky, dialect) == tricky
    assert preview.process_bind_param("a preview", dialect) == "a preview"
