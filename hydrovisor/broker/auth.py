"""Admission of a connection from its CONNECT, decided before amqtt sees the connection.

Rules (PROTOCOL §9):

- outside development mode a device must present a username known to the directory and its
  secret; anonymous clients get CONNACK 5, unknown users and wrong secrets CONNACK 4;
- in development mode anonymous clients, and clients whose username the directory does not
  know, are admitted *unrestricted* (no topic ACL: that is what the simulators and test tools
  use); a client presenting a username the directory knows is still verified (wrong secret ->
  CONNACK 4) and gets the device ACL, exactly as outside development mode;
- a verified device's last will must be on a topic the ACL lets it publish (CONNACK 5 else):
  amqtt publishes wills without any ACL check, so this is the only place to enforce it;
- an empty client id needs a clean session (§3.1.3-8: CONNACK 2);
- a client id belongs to a device (``DeviceDirectory.owner_of``: its node uid or hardware id):
  only that device's own credentials may connect with it (CONNACK 2 else), so a device holding
  credentials of its own cannot take another's id while that one is offline and lock it out.
  Outside development mode a verified device must use a client id of its own (the firmware's
  is its hardware id, PROTOCOL §1); in development mode ids that belong to no device are free.

The verdict is attached to the amqtt session (``attach``) and read back by the plugins.
"""

from __future__ import annotations

from dataclasses import dataclass

from amqtt.session import Session

from hydrovisor.broker import acl
from hydrovisor.broker.connect import (
    BAD_USERNAME_PASSWORD,
    IDENTIFIER_REJECTED,
    NOT_AUTHORIZED,
    ConnectRequest,
)
from hydrovisor.broker.directory import DeviceDirectory, DeviceIdentity

# Session attribute holding the Admission (amqtt sessions carry extension-owned attributes).
_ADMISSION = "hydrovisor_admission"


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted connection: who it is and whether the device ACL applies.

    ``verified`` is True when the directory vouched for the credentials; then the ACL applies
    and is evaluated against the directory's *current* identity of ``username`` (so binding
    or unbinding takes effect without a reconnect). Unverified admissions (development mode
    only) are unrestricted.
    """

    client_id: str
    username: str | None
    verified: bool
    identity: DeviceIdentity | None
    keep_alive: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused connection: the CONNACK return code and a reason for the log."""

    return_code: int
    reason: str


def admit(request: ConnectRequest, directory: DeviceDirectory, *, dev_mode: bool) -> Admission | Refusal:
    """Decide on one CONNECT."""
    if not request.client_id and not request.clean_session:
        return Refusal(IDENTIFIER_REJECTED, "empty_client_id_without_clean_session")
    username = request.username
    if username is None:
        if dev_mode:
            return _client_id_refusal(request.client_id, None, directory, dev_mode=True) or _admitted(request, None)
        return Refusal(NOT_AUTHORIZED, "anonymous")
    if directory.get(username) is None:
        if dev_mode:
            return _client_id_refusal(request.client_id, None, directory, dev_mode=True) or _admitted(request, None)
        directory.verify(username, "")  # same cost as a known user: no username probing by timing
        return Refusal(BAD_USERNAME_PASSWORD, "unknown_user")
    identity = directory.verify(username, _text(request.password))
    if identity is None:
        return Refusal(BAD_USERNAME_PASSWORD, "bad_password")
    if request.will is not None and not acl.may_publish(identity, request.will.topic):
        return Refusal(NOT_AUTHORIZED, "will_topic_denied")
    refused_id = _client_id_refusal(request.client_id, identity, directory, dev_mode=dev_mode)
    if refused_id is not None:
        return refused_id
    return _admitted(request, identity)


def _client_id_refusal(
    client_id: str, identity: DeviceIdentity | None, directory: DeviceDirectory, *, dev_mode: bool
) -> Refusal | None:
    """None when ``identity`` (None: an unverified development client) may use ``client_id``."""
    owner = directory.owner_of(client_id) if client_id else None
    if owner is not None:
        if identity is not None and identity.hardware_id == owner:
            return None
        return Refusal(IDENTIFIER_REJECTED, "client_id_of_another_device")
    if identity is not None and not dev_mode:
        # an empty id is refused too: amqtt would assign one that is nobody's
        return Refusal(IDENTIFIER_REJECTED, "client_id_not_the_devices")
    return None


def may_take_over(new: Admission, old: Admission) -> bool:
    """May ``new`` replace the live connection ``old`` using the same client id?

    MQTT makes the broker drop the old connection (§3.1.4-2). Without this check any admitted
    client could knock a device off by reusing its client id; allowed are the same username,
    the same device under its other username (hardware id vs node uid), a verified device
    replacing an unverified development client, and development clients among themselves.
    """
    if new.username == old.username:
        return True
    if new.identity is not None and old.identity is not None:
        return new.identity.hardware_id == old.identity.hardware_id
    return new.verified or not old.verified


def attach(session: Session, admission: Admission | None) -> None:
    """Record ``admission`` on the amqtt session."""
    setattr(session, _ADMISSION, admission)


def admission_of(session: Session | None) -> Admission | None:
    """The admission recorded on ``session`` (None: not admitted by us - refuse everything)."""
    admission = getattr(session, _ADMISSION, None)
    return admission if isinstance(admission, Admission) else None


def _admitted(request: ConnectRequest, identity: DeviceIdentity | None) -> Admission:
    return Admission(
        client_id=request.client_id,
        username=request.username,
        verified=identity is not None,
        identity=identity,
        keep_alive=request.keep_alive,
    )


def _text(password: bytes | None) -> str:
    """The password as text; bytes that are not UTF-8 can never match a generated secret."""
    if password is None:
        return ""
    return password.decode("utf-8", "replace")
