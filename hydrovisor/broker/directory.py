"""The broker's view of device credentials: username -> identity, checked on every CONNECT.

The application fills the directory from PostgreSQL at start and updates it whenever a
credential is issued or rotated and whenever a node is bound or unbound; the broker only reads
it (on the event loop), the application may write from any thread.

Password hashing: device secrets are random 192-bit tokens from :func:`new_secret`, never
human-chosen passwords, so there is nothing for a slow hash (argon2, scrypt, bcrypt) to
protect against: brute-forcing a 192-bit secret is infeasible at any hash speed. A salted
SHA-256 is therefore adequate, and it keeps a CONNECT storm after a broker restart (the whole
fleet reconnecting at once) cheap for the event loop - an argon2 verification costs tens of
milliseconds of CPU per connection. Encoding: ``sha256$<salt hex>$<digest hex>`` with
``digest = sha256(salt || utf8(secret))``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterable

import msgspec

_SCHEME = "sha256"
_SALT_BYTES = 16


class DeviceIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """One device credential and the namespace the device is bound to.

    ``username`` is what the device sends in CONNECT: its node uid once it has one, else its
    hardware id. ``gh_uid``/``zone_uid`` are the bound namespace (None while unbound); the temp
    namespace ``gh-temp/zn-temp/{hardware_id}`` is always the device's as well.
    """

    username: str
    hardware_id: str
    password_hash: str
    node_uid: str | None = None
    gh_uid: str | None = None
    zone_uid: str | None = None

    def __post_init__(self) -> None:
        """Reject identities whose username is neither the node uid nor the hardware id."""
        if not self.username or not self.hardware_id:
            raise ValueError("username and hardware_id must not be empty")
        if self.username not in (self.node_uid, self.hardware_id):
            raise ValueError("username must be the node uid or the hardware id")

    @property
    def bound_namespace(self) -> tuple[str, str, str] | None:
        """``(gh_uid, zone_uid, node_uid)`` when the device is bound to a zone, else None."""
        if self.gh_uid and self.zone_uid and self.node_uid:
            return (self.gh_uid, self.zone_uid, self.node_uid)
        return None

    def __repr__(self) -> str:
        """Like the default, without the password hash (repr ends up in logs)."""
        return (
            f"DeviceIdentity(username={self.username!r}, hardware_id={self.hardware_id!r}, "
            f"node_uid={self.node_uid!r}, gh_uid={self.gh_uid!r}, zone_uid={self.zone_uid!r})"
        )


def new_secret() -> str:
    """A fresh device secret (192 random bits, URL-safe text)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str) -> str:
    """Salted SHA-256 of ``password`` as ``sha256$<salt hex>$<digest hex>``."""
    salt = secrets.token_bytes(_SALT_BYTES)
    return f"{_SCHEME}${salt.hex()}${_digest(salt, password).hex()}"


def check_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; constant time in the digest comparison."""
    try:
        scheme, salt_hex, digest_hex = encoded.split("$")
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    if scheme != _SCHEME:
        return False
    return hmac.compare_digest(_digest(salt, password), expected)


def _digest(salt: bytes, password: str) -> bytes:
    return hashlib.sha256(salt + password.encode("utf-8", "surrogatepass")).digest()


# Verified against when the username is unknown, so unknown and known users cost the same.
_DUMMY_HASH = hash_password(new_secret())


class DeviceDirectory:
    """Thread-safe in-memory map username -> :class:`DeviceIdentity`.

    It also answers who owns a client id (:meth:`owner_of`): a device's client ids are its
    usernames (node uid, hardware id) and its hardware id, which is what the firmware sends as
    client id (PROTOCOL §1).
    """

    hash_password = staticmethod(hash_password)

    def __init__(self, identities: Iterable[DeviceIdentity] = ()) -> None:
        self._lock = threading.Lock()
        self._by_username: dict[str, DeviceIdentity] = {}
        # hardware id -> the usernames carrying it (an index, so owner_of stays O(1) at 10,000 nodes)
        self._by_hardware: dict[str, set[str]] = {}
        for identity in identities:
            self._store(identity)

    def __len__(self) -> int:
        """Number of known usernames."""
        with self._lock:
            return len(self._by_username)

    def put(self, identity: DeviceIdentity) -> None:
        """Add or replace the identity of ``identity.username``."""
        with self._lock:
            self._store(identity)

    def replace_all(self, identities: Iterable[DeviceIdentity]) -> None:
        """Swap the whole content at once (a reload from the database)."""
        fresh = DeviceDirectory(identities)
        with self._lock:
            self._by_username, self._by_hardware = fresh._by_username, fresh._by_hardware

    def remove(self, username: str) -> bool:
        """Forget ``username``; True when it was known."""
        with self._lock:
            return self._discard(username) is not None

    def owner_of(self, client_id: str) -> str | None:
        """The hardware id of the device owning ``client_id``, or None when the id is nobody's."""
        with self._lock:
            identity = self._by_username.get(client_id)
            if identity is not None:
                return identity.hardware_id
            return client_id if self._by_hardware.get(client_id) else None

    def get(self, username: str) -> DeviceIdentity | None:
        """The identity of ``username``, or None."""
        with self._lock:
            return self._by_username.get(username)

    def verify(self, username: str, password: str) -> DeviceIdentity | None:
        """The identity when ``password`` is right for ``username``, else None.

        The digest comparison is constant time, and an unknown username is checked against a
        dummy hash so that it takes as long as a wrong password.
        """
        identity = self.get(username)
        ok = check_password(password, identity.password_hash if identity else _DUMMY_HASH)
        return identity if ok and identity is not None else None

    def _store(self, identity: DeviceIdentity) -> None:
        """Under the lock (or before the directory is shared)."""
        self._discard(identity.username)
        self._by_username[identity.username] = identity
        self._by_hardware.setdefault(identity.hardware_id, set()).add(identity.username)

    def _discard(self, username: str) -> DeviceIdentity | None:
        """Under the lock: drop ``username`` from both maps."""
        old = self._by_username.pop(username, None)
        if old is not None:
            names = self._by_hardware.get(old.hardware_id, set())
            names.discard(username)
            if not names:
                self._by_hardware.pop(old.hardware_id, None)
        return old
