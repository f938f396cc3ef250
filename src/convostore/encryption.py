"""Encryption at rest: the keyring, the stored envelope, and where an engine keeps its keyring.

With the ``convostore[encryption]`` extra, payload columns (message contents, extras, ADK
state and events) are stored as an AES-256-GCM envelope around the payload
:mod:`convostore.codec` would otherwise store (compressed first, then encrypted):

==========  =======================================================================
bytes       what
==========  =======================================================================
1           ``0x10``, the envelope header (plain payloads start ``0x01``-``0x03``)
1           ``n``, the length of the key id
``n``       the key id, ASCII
12          a random nonce, new for every value written
the rest    AES-256-GCM ciphertext of the inner payload, with its 16-byte tag
==========  =======================================================================

Everything before the ciphertext is authenticated as associated data, so a changed key id
or nonce fails like a changed ciphertext. The row a value belongs to is *not* part of it:
someone who can write to the database can move a ciphertext from one row to another
(see ``docs/encryption.md``). Plain rows, rows under an old key and rows under the
current key read side by side; ``convostore rotate-keys`` (:func:`convostore.sql.rotation.rotate`)
moves them all onto the current key.

A :class:`Keyring` is given to :func:`convostore.connect`, :func:`convostore.create_engine`
or a façade (``encryption=``); it is then part of the engine's profile
(:class:`~convostore.sql.profile.EngineProfile`), which is what
:class:`~convostore.sql.types.CompressedJSON` reads when it binds and reads values, so every
write path of the engine (group commit, imports, the thin SQLite driver) seals alike.
``cryptography`` is imported only when a keyring is made.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from convostore.codec import ENCRYPTED, NONCE_SIZE, parse_envelope
from convostore.errors import ConfigurationError, DecryptionError, KeyNotFoundError

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "ENVELOPE",
    "KEYS_ENV",
    "KEY_ENV",
    "KEY_SIZE",
    "TEXT_PREFIX",
    "Keyring",
    "clear_text_allowed",
    "generate_key",
    "install",
    "key_id_of",
    "keyring_of",
    "open_payload",
    "open_text",
    "require_clear_text",
    "seal_text",
]

ENVELOPE: Final = ENCRYPTED
"""The header byte of an encrypted payload."""

KEY_SIZE: Final = 32
"""Bytes in a key: AES-256."""


KEYS_ENV: Final = "CONVOSTORE_ENCRYPTION_KEYS"
"""``id:base64key,id:base64key,...``: every key that may be needed to read."""

KEY_ENV: Final = "CONVOSTORE_ENCRYPTION_KEY"
"""The id of the key new values are written with (default: the only key listed)."""

CLEAR_TEXT_ENV: Final = "CONVOSTORE_ENCRYPTION_CLEAR_TEXT"
"""``0``/``false``/``no``: store nothing in clear (see :attr:`Keyring.clear_text`)."""

TEXT_PREFIX: Final = "convostore-sealed:"
"""How a sealed text column value starts: the prefix, then the envelope in base64."""

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

KeySource = Mapping[str, bytes] | Callable[[str], bytes | None]
"""Keys by id: a mapping, or a function (a KMS lookup) returning ``None`` for unknown ids."""


class Keyring:
    """The keys an engine reads with, and the one it writes with.

    Args:
        keys: ``{key_id: 32-byte key}``, or a callable ``key_id -> bytes | None`` (for a
            KMS or secrets manager); what it returns is cached for the keyring's lifetime,
            ``None`` (unknown id) is not, so a key published later is found.
        current: The id of the key new values are encrypted with; ``None`` writes plain
            payloads (a keyring that only reads, e.g. to decrypt a database).
        clear_text: ``True`` (the default) keeps what convostore needs to list and
            preview in clear: session previews and the agent messages' ``message`` text.
            ``False`` stores previews as ``NULL`` and seals the ``message`` text too; a
            search index must not be built either (see :func:`clear_text_allowed`).

    Key ids are 1 to 64 letters, digits, ``.``, ``_`` or ``-``.

    Raises:
        ConfigurationError: The ``encryption`` extra is not installed, a key id or key is
            malformed, or ``clear_text=False`` without a ``current`` key.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        current: str | None,
        clear_text: bool = True,
    ) -> None:
        self._aead_class = _aead_class()
        if current is not None:
            _check_key_id(current)
        if not clear_text and current is None:
            raise ConfigurationError("clear_text=False needs a current key to write with")
        self.current = current
        self.clear_text = clear_text
        self._lock = threading.Lock()
        self._ciphers: dict[str, Any] = {}
        if callable(keys):
            self._lookup: Callable[[str], bytes | None] = keys
        else:
            fixed = dict(keys)
            for key_id, key in fixed.items():
                _check_key_id(key_id)
                self._cipher_for(key_id, key)
            if current is not None and current not in fixed:
                raise ConfigurationError(f"the current key {current!r} is not in the keyring")
            self._lookup = fixed.get
        self._current_id = b"" if current is None else current.encode("ascii")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring:
        """The keyring described by the environment (or ``environ``).

        ``CONVOSTORE_ENCRYPTION_KEYS`` lists ``id:base64key`` pairs separated by commas;
        ``CONVOSTORE_ENCRYPTION_KEY`` names the current key (optional when one key is
        listed); ``CONVOSTORE_ENCRYPTION_CLEAR_TEXT=0`` stores nothing in clear.

        Raises:
            ConfigurationError: A variable is missing or malformed.
        """
        env = os.environ if environ is None else environ
        listed = env.get(KEYS_ENV, "").strip()
        if not listed:
            raise ConfigurationError(f"{KEYS_ENV} is not set (id:base64key,...)")
        keys: dict[str, bytes] = {}
        for item in listed.split(","):
            key_id, sep, encoded = item.strip().partition(":")
            if not sep:
                raise ConfigurationError(f"{KEYS_ENV}: {key_id!r} is not id:base64key")
            keys[key_id] = decode_key(encoded, f"{KEYS_ENV} key {key_id!r}")
        current = env.get(KEY_ENV, "").strip() or None
        if current is None and len(keys) == 1:
            current = next(iter(keys))
        if current is None:
            raise ConfigurationError(f"{KEY_ENV} must name the current key of {KEYS_ENV}")
        clear = env.get(CLEAR_TEXT_ENV, "1").strip().lower() not in ("0", "false", "no")
        return cls(keys, current=current, clear_text=clear)

    def __repr__(self) -> str:
        # Never the keys.
        return f"Keyring(current={self.current!r}, clear_text={self.clear_text!r})"

    def seal(self, inner: bytes) -> bytes:
        """Encrypt ``inner`` (a stored payload) under the current key into an envelope.

        Raises:
            ConfigurationError: The keyring has no current key.
            KeyNotFoundError: A key callable does not know the current key.
        """
        if self.current is None:
            raise ConfigurationError("this keyring has no current key to encrypt with")
        key_id = self._current_id
        prefix = bytes((ENVELOPE, len(key_id))) + key_id + os.urandom(NONCE_SIZE)
        sealed: bytes = self._cipher(self.current).encrypt(prefix[-NONCE_SIZE:], inner, prefix)
        return prefix + sealed

    def open(self, data: bytes) -> bytes:
        """The inner payload of an envelope made by :meth:`seal` under any known key.

        Raises:
            KeyNotFoundError: Its key id is not in the keyring.
            CorruptEnvelopeError: The envelope is truncated or malformed.
            DecryptionError: The envelope fails authentication (a wrong
                key under that id, or changed bytes).
        """
        key_id, start = parse_envelope(data)
        cipher = self._cipher(key_id)
        from cryptography.exceptions import InvalidTag

        try:
            inner: bytes = cipher.decrypt(
                data[start - NONCE_SIZE : start], data[start:], data[:start]
            )
        except InvalidTag:
            raise DecryptionError(
                f"a payload encrypted with key {key_id!r} failed authentication: "
                "the key under that id is wrong, or the stored bytes were changed"
            ) from None
        return inner

    def has_current(self, data: bytes) -> bool:
        """Whether ``data`` is an envelope under the current key."""
        return self.current is not None and key_id_of(data) == self.current

    def _cipher(self, key_id: str) -> Any:
        cipher = self._ciphers.get(key_id)
        if cipher is not None:
            return cipher
        key = self._lookup(key_id)
        if key is None:
            raise KeyNotFoundError(f"no key {key_id!r} in the keyring")
        return self._cipher_for(key_id, key)

    def _cipher_for(self, key_id: str, key: bytes) -> Any:
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise ConfigurationError(f"key {key_id!r} must be {KEY_SIZE} bytes (AES-256)")
        with self._lock:
            return self._ciphers.setdefault(key_id, self._aead_class(key))


def generate_key() -> str:
    """A new random key, base64-encoded as :meth:`Keyring.from_env` reads it."""
    return base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii")


def decode_key(encoded: str, what: str = "key") -> bytes:
    """A base64 (standard or URL-safe) key of :data:`KEY_SIZE` bytes.

    Raises:
        ConfigurationError: It is not base64, or not 32 bytes long.
    """
    try:
        key = base64.b64decode(encoded.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{what} is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise ConfigurationError(f"{what} is {len(key)} bytes, not {KEY_SIZE} (AES-256)")
    return key


def key_id_of(data: bytes) -> str | None:
    """The key id of an envelope, or ``None`` for a plain payload.

    Raises:
        CorruptEnvelopeError: ``data`` starts like an envelope but is truncated.
    """
    if not data or data[0] != ENVELOPE:
        return None
    return parse_envelope(data)[0]


def open_payload(data: bytes, keyring: Keyring | None) -> bytes:
    """``data`` itself if plain, else the payload inside its envelope.

    Raises:
        KeyNotFoundError: It is encrypted and there is no keyring, or no key of its id.
        DecryptionError: It fails authentication.
    """
    if not data or data[0] != ENVELOPE:
        return data
    if keyring is None:
        key_id, _ = parse_envelope(data)
        raise KeyNotFoundError(
            f"a payload is encrypted with key {key_id!r} and no keyring was given "
            "(pass encryption=Keyring(...), see docs/encryption.md)"
        )
    return keyring.open(data)


def seal_text(text: str, keyring: Keyring) -> str:
    """``text`` sealed under the keyring's current key, as a text column stores it."""
    sealed = base64.b64encode(keyring.seal(text.encode("utf-8"))).decode("ascii")
    return TEXT_PREFIX + sealed


def open_text(text: str, keyring: Keyring | None) -> str:
    """The text a sealed text column value holds; any other text as it is.

    A value that starts with :data:`TEXT_PREFIX` but is not an envelope (text written in
    clear that happens to start so) is returned unchanged.

    Raises:
        KeyNotFoundError, DecryptionError: As for :func:`open_payload`.
    """
    data = sealed_text_bytes(text)
    if data is None:
        return text
    try:
        return open_payload(data, keyring).decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptionError("a sealed text does not hold UTF-8") from None


def sealed_text_bytes(text: str) -> bytes | None:
    """The envelope inside a sealed text column value, or ``None`` if it is not one."""
    if not text.startswith(TEXT_PREFIX):
        return None
    try:
        data = base64.b64decode(text[len(TEXT_PREFIX) :], validate=True)
        parse_envelope(data)
    except (binascii.Error, ValueError, DecryptionError):
        return None
    return data if data[0] == ENVELOPE else None


def install(engine: AsyncEngine, keyring: Keyring | None, *, replace: bool = False) -> None:
    """Make ``engine`` (and its read replicas) encrypt and decrypt with ``keyring``.

    For an engine made elsewhere (``create_async_engine``): an engine convostore creates
    takes its keyring as ``encryption=`` (:func:`convostore.create_engine`,
    :func:`convostore.connect`, a façade given a URL). It replaces the engine's profile
    (:class:`~convostore.sql.profile.EngineProfile`) with one holding ``keyring``, and
    its replicas' likewise. A façade given an engine and ``encryption=`` calls this.
    ``None`` does nothing unless ``replace`` (then it removes the keyring); the keyring
    the engine already has does nothing.

    Raises:
        ConfigurationError: The engine already has another keyring and ``replace`` is off.
    """
    from convostore.sql.profile import profile_of, replace_profile

    present = profile_of(engine)
    if present.keyring is keyring or (keyring is None and not replace):
        return
    if present.keyring is not None and not replace:
        raise ConfigurationError("this engine already has another keyring (use replace=True)")
    replace_profile(engine, keyring=keyring)
    if present.replicas is not None:
        for replica in present.replicas.engines:
            replace_profile(replica, keyring=keyring)


def keyring_of(target: AsyncEngine | Dialect) -> Keyring | None:
    """The keyring of an engine (or its dialect), if any: its profile's
    (:attr:`convostore.sql.profile.EngineProfile.keyring`)."""
    from convostore.sql.profile import profile_of

    return profile_of(target).keyring


def clear_text_allowed(target: AsyncEngine | Dialect) -> bool:
    """Whether anything derived from message text may be stored in clear on this engine.

    ``False`` only for an engine whose keyring has ``clear_text=False``: then previews are
    ``NULL``, the ``message`` text is sealed, and features that index text (full-text
    search) must store nothing.
    """
    from convostore.sql.profile import profile_of

    return profile_of(target).clear_text


def require_clear_text(target: AsyncEngine | Dialect, what: str) -> None:
    """Refuse ``what`` (a feature that reads the search index) on an engine that stores
    nothing in clear.

    Raises:
        ConfigurationError: :func:`clear_text_allowed` is false for ``target``.
    """
    if not clear_text_allowed(target):
        raise ConfigurationError(
            f"{what} needs the search index, and this engine's keyring stores nothing in "
            "clear (clear_text=False): messages are not indexed"
        )


def _check_key_id(key_id: object) -> None:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise ConfigurationError(
            f"key id {key_id!r} must be 1 to 64 letters, digits, '.', '_' or '-'"
        )


def _aead_class() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise ConfigurationError(
            "encryption needs the cryptography package: install convostore[encryption]"
        ) from exc
    return AESGCM
