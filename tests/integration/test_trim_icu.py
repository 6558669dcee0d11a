"""The Linux build trims Qt's ICU data (packaging/trim_icu.py): what Qt asks of ICU must still
work with the trimmed library, and a failed or impossible trim must leave the library whole."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt uses ICU on Linux only"),
    pytest.mark.timeout(120),
]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "packaging" / "trim_icu.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("trim_icu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


trim_icu = _load_script()


def _qt_icu_data() -> Path:
    import PySide6

    found = sorted(Path(PySide6.__file__).parent.glob("Qt/lib/libicudata.so.*"))
    assert found, "PySide6's Qt has no ICU data library"
    return found[0]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A build folder holding a copy of Qt's ICU data where the built app keeps it."""
    lib = tmp_path / "mangaba-desktop" / "_internal" / "PySide6" / "Qt" / "lib"
    lib.mkdir(parents=True)
    shutil.copy2(_qt_icu_data(), lib)
    return tmp_path / "mangaba-desktop"


def _trim(bundle: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(bundle)],
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, **env},
    )


def _with_icu(library: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Python with Qt, its ICU data taken from ``library`` (loaded first, under its soname)."""
    env = {**os.environ, "LD_PRELOAD": str(library), "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


BERLIN_IN_GERMAN = (
    "from PySide6.QtCore import QLocale, QTimeZone\n"
    "print(QTimeZone(b'Europe/Berlin').displayName(QTimeZone.TimeType.StandardTime,"
    " QTimeZone.NameType.LongName, QLocale('de_DE')))"
)


def test_trimmed_data_still_serves_sorting_case_mapping_encodings_and_zone_names(bundle):
    library = next(bundle.rglob("libicudata.so.*"))
    before = library.stat().st_size

    done = _trim(bundle)

    assert done.returncode == 0, done.stdout + done.stderr
    after = library.stat().st_size
    assert after < before / 3, (before, after)
    assert "MB ->" in done.stdout
    # The self-test's own check passes against the trimmed data: Swedish and German sorting,
    # Turkish upper case, the legacy encodings, zone names.
    checked = _with_icu(
        library, "from mangaba_desktop.selftest import _text_services; print(_text_services())"
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "legacy encodings" in checked.stdout
    # The trimmed data is what was loaded: zone names are kept in English only.
    whole = _with_icu(_qt_icu_data(), BERLIN_IN_GERMAN)
    trimmed = _with_icu(library, BERLIN_IN_GERMAN)
    assert whole.stdout.strip() == "Mitteleuropäische Normalzeit"
    assert trimmed.stdout.strip() == "Central European Standard Time"


def test_trimming_twice_changes_nothing_the_second_time(bundle):
    assert _trim(bundle).returncode == 0
    library = next(bundle.rglob("libicudata.so.*"))
    first = library.read_bytes()

    again = _trim(bundle)

    assert again.returncode == 0, again.stderr
    assert "already trimmed" in again.stdout
    assert library.read_bytes() == first


def test_without_icus_tools_the_data_is_left_whole_and_the_reason_said(bundle, tmp_path):
    library = next(bundle.rglob("libicudata.so.*"))
    original = library.read_bytes()
    empty = tmp_path / "no-tools"
    empty.mkdir()

    done = _trim(bundle, PATH=str(empty))

    assert done.returncode == 2
    assert "icupkg" in done.stdout and "icu-devtools" in done.stdout
    assert library.read_bytes() == original


def test_a_folder_without_icu_data_is_an_error_not_a_silent_success(tmp_path):
    (tmp_path / "empty-build").mkdir()

    done = _trim(tmp_path / "empty-build")

    assert done.returncode == 1
    assert "libicudata" in done.stderr


@pytest.mark.parametrize(
    ("item", "goes"),
    [
        ("coll/sv.res", False),  # Swedish sorting
        ("coll/root.res", False),
        ("coll/ucadata.icu", False),  # the root collation every locale builds on
        ("cnvalias.icu", False),  # the names of the character sets
        ("res_index.res", False),  # the index of locales
        ("likelySubtags.res", False),
        ("zoneinfo64.res", False),
        ("root.res", False),
        ("ibm-5348_P100-1997.cnv", False),  # windows-1252
        ("ibm-943_P15A-2003.cnv", False),  # Shift_JIS
        ("ibm-1383_P110-1999.cnv", False),  # GB2312
        ("ibm-1375_P100-2008.cnv", False),  # Big5-HKSCS
        ("zone/en.res", False),
        ("zone/de.res", True),
        ("lang/pt.res", True),
        ("brkitr/cjdict.dict", True),
        ("translit/root.res", True),
        ("de.res", True),
        ("zh_Hant_TW.res", True),
        ("es_419.res", True),
        ("ibm-37_P100-1995.cnv", True),  # EBCDIC
        ("unames.icu", True),
    ],
)
def test_what_goes_and_what_stays(item, goes):
    assert trim_icu.dropped(item) is goes


def test_a_build_folder_on_another_file_system_than_the_temporary_one(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == Path(tempfile.gettempdir()).stat().st_dev:
        pytest.skip("no second file system to build on")
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        lib = Path(folder) / "mangaba-desktop" / "_internal" / "PySide6" / "Qt" / "lib"
        lib.mkdir(parents=True)
        shutil.copy2(_qt_icu_data(), lib)

        done = _trim(Path(folder) / "mangaba-desktop")

        assert done.returncode == 0, done.stderr
        assert next(lib.glob("libicudata.so.*")).stat().st_size < 10_000_000
        assert [p.name for p in lib.iterdir()] == [next(lib.glob("libicudata.so.*")).name]
