"""``mangaba-desktop --self-test`` in a subprocess, as a built binary is checked: the report,
the exit code, and nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]


def self_test(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    return subprocess.run(
        [sys.executable, "-m", "mangaba_desktop", "--self-test"],
        cwd=ROOT,
        env={
            **os.environ,
            "TMPDIR": str(scratch),
            "HOME": str(tmp_path / "home"),  # whatever it writes, it is not the user's
            **env,
        },
        capture_output=True,
        text=True,
        timeout=280,
    )


def test_the_self_test_checks_every_part_and_passes_with_a_safe_keyring(tmp_path, secret_service):
    # The private Secret Service the tests start is on DBUS_SESSION_BUS_ADDRESS already.
    done = self_test(tmp_path, PYTHON_KEYRING_BACKEND="keyring.backends.SecretService.Keyring")

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Mangaba Desktop ") and "source install" in lines[0]
    checks = {line.split("]")[1].split("(")[0].strip(): line[:6] for line in lines[1:-1]}
    assert checks == {
        "database": "[ok  ]",
        "embedded model": "[ok  ]",
        "plugins": "[ok  ]",
        "model catalogue": "[ok  ]",
        "window and charts": "[ok  ]",
        "text services": "[ok  ]",
        "keyring": "[ok  ]",
    }
    assert "smollm2" in done.stdout and "answered “" in done.stdout
    assert "SecretService" in next(line for line in lines if "keyring" in line)
    assert lines[-1].startswith("self-test PASSED in ")
    # The temporary data folder is gone.
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_keyring_that_cannot_keep_keys_safely_is_a_warning_not_a_failure(tmp_path):
    done = self_test(tmp_path, PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring")

    lines = done.stdout.splitlines()
    keyring = next(line for line in lines if "] keyring" in line)
    assert keyring.startswith("[warn]") and "not a secure keyring" in keyring
    assert done.returncode == 0, done.stdout + done.stderr
    assert lines[-1].startswith("self-test PASSED")
