"""A real Secret Service for the keyring tests: gnome-keyring on a private D-Bus session bus.

The bus and the keyring run in a temporary folder (HOME, XDG_DATA_HOME and XDG_RUNTIME_DIR all
point there), so a test never sees or changes the keyring of the user running it. The bus has
no service folders: nothing on it is started on demand, only the daemon started here answers.

Without dbus-daemon or gnome-keyring-daemon the tests that ask for it are skipped, except in CI
(``CI`` set), where they fail: CI installs both and must really run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SECRETS_NAME = "org.freedesktop.secrets"
START_TIMEOUT = 15.0
KEYRING_PASSWORD = b"mangaba-test-keyring"

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the keyring tests against a real Secret Service)")
    pytest.skip(reason)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:].strip() or "(nothing)"
    except OSError:
        return "(no output)"


def _name_has_owner(address: str, name: str) -> bool:
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    with open_dbus_connection(bus=address) as connection:
        reply = connection.send_and_get_reply(message_bus.NameHasOwner(name), timeout=2)
    return bool(reply.body[0])


def _start_bus(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    config = root / "bus.conf"
    config.write_text(_BUS_CONFIG.format(socket=root / "bus"))
    with (root / "dbus-daemon.log").open("wb") as log:
        bus = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
        )
    assert bus.stdout is not None
    address = bus.stdout.readline().decode().strip()
    bus.stdout.close()
    if not address:
        _stop(bus)
        pytest.fail(f"dbus-daemon printed no address: {_log_tail(root / 'dbus-daemon.log')}")
    return bus, address


def _start_keyring(root: Path, env: dict[str, str], address: str) -> subprocess.Popen[bytes]:
    log = root / "gnome-keyring.log"
    # --unlock reads the password of the "login" keyring from stdin up to EOF and creates that
    # keyring (the default collection) when it does not exist, so no prompt is ever needed.
    with log.open("wb") as stderr:
        keyring_daemon = subprocess.Popen(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**env, "DBUS_SESSION_BUS_ADDRESS": address},
        )
    assert keyring_daemon.stdin is not None
    keyring_daemon.stdin.write(KEYRING_PASSWORD)
    keyring_daemon.stdin.close()
    deadline = time.monotonic() + START_TIMEOUT
    while not _name_has_owner(address, SECRETS_NAME):
        if keyring_daemon.poll() is not None:
            pytest.fail(
                f"gnome-keyring-daemon exited with {keyring_daemon.returncode} before owning "
                f"{SECRETS_NAME}: {_log_tail(log)}"
            )
        if time.monotonic() > deadline:
            _stop(keyring_daemon)
            pytest.fail(
                f"gnome-keyring-daemon did not own {SECRETS_NAME} within {START_TIMEOUT:.0f} s: "
                f"{_log_tail(log)}"
            )
        time.sleep(0.05)
    return keyring_daemon


def _check_round_trip(backend: Any) -> None:
    """Fail at once, with a plain reason, if the keyring cannot store a secret at all."""
    service, user = "mangaba-desktop-fixture-check", "check"
    try:
        backend.set_password(service, user, "check-value")
        value = backend.get_password(service, user)
        backend.delete_password(service, user)
    except Exception as error:
        pytest.fail(f"the test Secret Service cannot store a secret: {error!r}")
    if value != "check-value":
        pytest.fail(f"the test Secret Service gave back {value!r} for a secret just stored")


@pytest.fixture(scope="session")
def secret_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A ``keyring.backends.SecretService.Keyring`` talking to a private gnome-keyring.

    ``DBUS_SESSION_BUS_ADDRESS`` points at the private bus for the whole session (other code
    that finds the Secret Service on its own finds this one too) and is restored afterwards.
    Tests share the keyring: each one deletes what it stored.
    """
    missing = [name for name in ("dbus-daemon", "gnome-keyring-daemon") if not shutil.which(name)]
    if missing:
        _unavailable(f"{' and '.join(missing)} not installed (apt: dbus gnome-keyring)")
    try:
        import jeepney  # noqa: F401
        import secretstorage  # noqa: F401
    except ImportError as error:
        _unavailable(f"the Secret Service client is not installed: {error}")

    root = Path(tmp_path_factory.mktemp("secret-service", numbered=True))
    for folder in ("home", "data", "runtime"):
        (root / folder).mkdir(mode=0o700)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DISPLAY", "WAYLAND_DISPLAY", "GNOME_KEYRING_CONTROL", "SSH_AUTH_SOCK"}
        and not key.startswith("DBUS_")
    }
    env |= {
        "HOME": str(root / "home"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_RUNTIME_DIR": str(root / "runtime"),
    }

    bus, address = _start_bus(root, env)
    keyring_daemon: subprocess.Popen[bytes] | None = None
    try:
        keyring_daemon = _start_keyring(root, env, address)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
            from keyring.backends.SecretService import Keyring

            backend = Keyring()
            _check_round_trip(backend)
            yield backend
    finally:
        if keyring_daemon is not None:
            _stop(keyring_daemon)
        _stop(bus)


@pytest.fixture
def default_keyring(secret_service: Any) -> Iterator[Any]:
    """The real Secret Service as the keyring the app's own ``KeyStore()`` finds."""
    import keyring

    previous = keyring.get_keyring()
    keyring.set_keyring(secret_service)
    yield secret_service
    keyring.set_keyring(previous)
