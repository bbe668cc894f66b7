"""DeviceDirectory and the secret hashing."""

from __future__ import annotations

import threading

import pytest

from hydrovisor.broker.directory import (
    DeviceDirectory,
    DeviceIdentity,
    check_password,
    hash_password,
    new_secret,
)


def identity(username: str = "nd-1", secret: str = "s3cret", **fields: str | None) -> DeviceIdentity:
    base: dict[str, str | None] = {"node_uid": "nd-1", "hardware_id": "esp32-000000000001"}
    return DeviceIdentity(username=username, password_hash=hash_password(secret), **(base | fields))  # type: ignore[arg-type]


def test_hash_format_is_salted_sha256_and_verifies() -> None:
    secret = new_secret()
    encoded = hash_password(secret)
    scheme, salt, digest = encoded.split("$")
    assert (scheme, len(salt), len(digest)) == ("sha256", 32, 64)
    assert encoded != hash_password(secret)  # fresh salt each time
    assert check_password(secret, encoded)
    assert not check_password(secret + "x", encoded)
    for broken in ("", "sha256$zz$00", "md5$00$00", "sha256$00", encoded.replace("sha256", "sha1")):
        assert not check_password(secret, broken)


def test_new_secret_is_high_entropy_url_safe_text() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(s) == 32 and s.replace("-", "").replace("_", "").isalnum() for s in secrets)


def test_verify_returns_the_identity_only_for_the_right_secret() -> None:
    directory = DeviceDirectory([identity(secret="right")])
    assert directory.verify("nd-1", "right") == directory.get("nd-1")
    assert directory.verify("nd-1", "wrong") is None
    assert directory.verify("nobody", "right") is None
    assert DeviceDirectory.hash_password("x").startswith("sha256$")


def test_put_remove_replace_all() -> None:
    directory = DeviceDirectory()
    directory.put(identity())
    directory.put(identity(username="esp32-000000000001"))
    assert len(directory) == 2
    assert directory.remove("nd-1")
    assert not directory.remove("nd-1")
    directory.replace_all([identity(username="nd-9", node_uid="nd-9")])
    assert directory.get("esp32-000000000001") is None
    assert directory.get("nd-9") is not None


def test_identity_rules_and_repr_without_the_hash() -> None:
    bound = identity(gh_uid="gh-1", zone_uid="zn-1")
    assert bound.bound_namespace == ("gh-1", "zn-1", "nd-1")
    assert identity(gh_uid="gh-1").bound_namespace is None
    assert "sha256" not in repr(bound)
    assert "sha256" not in str(bound)
    with pytest.raises(ValueError, match="username"):
        identity(username="someone-else")
    with pytest.raises(ValueError, match="empty"):
        identity(username="", node_uid="")


def test_concurrent_writers_and_readers() -> None:
    directory = DeviceDirectory()
    errors: list[BaseException] = []
    template = identity()

    def writer(n: int) -> None:
        try:
            for i in range(300):
                name = f"nd-{n}-{i}"
                directory.put(DeviceIdentity(username=name, node_uid=name, hardware_id=f"hw-{n}-{i}",
                                             password_hash=template.password_hash))
                directory.get(name)
                if i % 3 == 0:
                    directory.remove(name)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(directory) == 4 * 200


def test_owner_of_a_client_id_follows_puts_removals_and_reloads() -> None:
    hw = "esp32-000000000001"
    directory = DeviceDirectory([identity("nd-1")])
    assert directory.owner_of("nd-1") == hw  # a username
    assert directory.owner_of(hw) == hw  # the hardware id, though not a username here
    assert directory.owner_of("nd-2") is None
    directory.put(identity(hw, node_uid=None))
    directory.put(identity("nd-1", hardware_id="esp32-000000000002"))  # the uid moved to other hardware
    assert (directory.owner_of("nd-1"), directory.owner_of(hw)) == ("esp32-000000000002", hw)
    assert directory.remove(hw)
    assert directory.owner_of(hw) is None
    directory.replace_all([identity("nd-9", node_uid="nd-9")])
    assert (directory.owner_of("nd-9"), directory.owner_of("nd-1")) == (hw, None)
