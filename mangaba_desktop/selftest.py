"""``mangaba-desktop --self-test``: does this installation work, on this computer?

Headless, in a temporary data folder that is removed after: the store is created and migrated,
the embedded model answers one turn, litellm reads its price table, the plugins are found,
Qt draws a window offscreen (with the charts' library), and the keyring is named. A short
report goes to stdout; the exit code is 0 when everything the app needs works (a keyring that
cannot keep keys safely is a warning: the app then asks before keeping a key for one run).

A built binary is checked with it on any OS, without a display.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import APP_NAME, __version__

TURN_TIMEOUT_S = 300.0
"""A first turn loads the model from disk: slow disks and old CPUs take a while."""
QUESTION = "Reply with one word: hello."


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float
    required: bool = True


class SelfTest:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.checks: list[Check] = []

    async def run(self, name: str, check: Callable[[], Awaitable[str]], *, required: bool) -> bool:
        started = time.perf_counter()
        try:
            detail, ok = await check(), True
        except Exception as exc:  # every failure is reported, none stops the others
            detail, ok = f"{type(exc).__name__}: {exc}".strip()[:500], False
        elapsed = time.perf_counter() - started
        self.checks.append(Check(name, ok, detail, elapsed, required))
        mark = "ok  " if ok else ("FAIL" if required else "warn")
        print(f"[{mark}] {name} ({elapsed:.1f} s): {detail}", file=self.out, flush=True)
        return ok


async def _self_test(out: TextIO) -> int:
    frozen = getattr(sys, "frozen", False)
    print(
        f"{APP_NAME} {__version__} self-test · Python {platform.python_version()} · "
        f"{platform.system()} {platform.machine()} · "
        f"{'built binary' if frozen else 'source install'}",
        file=out,
        flush=True,
    )
    test = SelfTest(out)
    # A file still open when it ends (a check that failed half-way) must not turn the report
    # into a traceback on Windows.
    with tempfile.TemporaryDirectory(
        prefix="mangaba-self-test-", ignore_cleanup_errors=True
    ) as folder:
        runtime: Any = None

        async def store() -> str:
            nonlocal runtime
            from .core.agent import Runtime
            from .core.store.migrations import LATEST_VERSION

            runtime = await Runtime.open(Path(folder))
            return f"created and migrated to schema {LATEST_VERSION} in a temporary folder"

        # turn() and plugins() run only once store() has opened the runtime.
        async def turn() -> str:
            from .core.agent import MangabaAgent

            agent = MangabaAgent(agent_name="Self-test", runtime=runtime)
            reply = await asyncio.wait_for(agent.chat(QUESTION), TURN_TIMEOUT_S)
            text = " ".join(reply.text.split())
            if not text:
                raise RuntimeError("the model answered nothing")
            took = f" in {reply.latency_ms / 1000:.1f} s" if reply.latency_ms else ""
            return f"{reply.model} answered “{text[:60]}”{took}"

        async def prices() -> str:
            from .core.providers.completions import import_litellm

            litellm = await asyncio.to_thread(import_litellm)
            known = len(litellm.model_cost)
            if known < 100:
                raise RuntimeError(f"litellm's price table has {known} models")
            return f"litellm {_version('litellm')}, {known:,} models in its local price table"

        async def plugins() -> str:
            found = [info.name for info in runtime.plugins.plugins()]
            if not found:
                raise RuntimeError("no plugin found (the package metadata is missing)")
            return ", ".join(found)

        async def window() -> str:
            return _draw_offscreen()

        async def text() -> str:
            return _text_services()

        async def keyring() -> str:
            from .core.providers.secrets import KeyStore

            backend = await asyncio.to_thread(KeyStore().backend)
            if not backend.secure:
                raise RuntimeError(backend.description)
            return backend.name

        try:
            if await test.run("database", store, required=True):
                await test.run("embedded model", turn, required=True)
                await test.run("plugins", plugins, required=True)
            await test.run("model catalogue", prices, required=True)
            await test.run("window and charts", window, required=True)
            await test.run("text services", text, required=True)
            await test.run("keyring", keyring, required=False)
        finally:
            if runtime is not None:
                await runtime.close()
    failed = [check.name for check in test.checks if check.required and not check.ok]
    total = sum(check.seconds for check in test.checks)
    verdict = "PASSED" if not failed else f"FAILED: {', '.join(failed)}"
    print(f"self-test {verdict} in {total:.1f} s", file=out, flush=True)
    return 0 if not failed else 1


def _draw_offscreen() -> str:
    """A window drawn by Qt with a chart in it, off screen (the platform plugin, fonts and
    the charts' library are all there)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import __version__ as qt_version
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([APP_NAME])
    import pyqtgraph as pg

    plot = pg.PlotWidget()
    plot.plot([0, 1, 2], [0, 1, 4])
    plot.resize(320, 200)
    image = plot.grab().toImage()
    plot.close()
    plot.deleteLater()
    if image.isNull() or image.width() < 100:
        raise RuntimeError("Qt drew nothing")
    platform_name = app.platformName()
    return (
        f"PySide6 {qt_version} on the {platform_name} platform, pyqtgraph {pg.__version__}, "
        f"{_numpy()}"
    )


def _numpy() -> str:
    """numpy's version and BLAS (the Linux build bundles one without: the charts need none)."""
    import numpy

    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"].get("blas", {})
        name = blas.get("name") if blas.get("found") else None
    except Exception:  # the build information is optional; the version is enough
        return f"numpy {numpy.__version__}"
    return f"numpy {numpy.__version__} (BLAS: {name or 'none'})"


LEGACY_ENCODINGS = (
    "Shift_JIS",
    "EUC-KR",
    "GBK",
    "GB2312",
    "Big5",
    "Big5-HKSCS",
    "windows-1251",
    "KOI8-R",
)


def _text_services() -> str:
    """What Qt asks of ICU on Linux (and of the OS elsewhere), which the Linux build trims to
    what Qt reads: locale-aware sorting, case mapping, legacy character sets, zone names."""
    from functools import cmp_to_key

    from PySide6.QtCore import QCollator, QLocale, QStringDecoder, QTimeZone

    def collated(locale: str) -> list[str]:
        collator = QCollator(QLocale(locale))
        return sorted(["z", "ö", "a"], key=cmp_to_key(collator.compare))

    problems = []
    # Swedish sorts ö after z, German between a and z: both tailorings are there.
    if collated("sv_SE") != ["a", "z", "ö"] or collated("de_DE") != ["a", "ö", "z"]:
        problems.append(f"sorting is not locale-aware (sv {collated('sv_SE')})")
    if QLocale("tr_TR").toUpper("i") != "İ":
        problems.append("Turkish case mapping is missing")
    detail = "locale-aware sorting and case mapping"
    if sys.platform.startswith("linux"):
        # Through ICU, whose data the Linux build trims: these must have stayed.
        missing = [name for name in LEGACY_ENCODINGS if not QStringDecoder(name).isValid()]
        if missing:
            problems.append(f"no decoder for {', '.join(missing)}")
        zone = QTimeZone(b"Europe/Berlin").displayName(
            QTimeZone.TimeType.StandardTime, QTimeZone.NameType.LongName, QLocale("en_US")
        )
        if not zone:
            problems.append("time zones have no names")
        detail += f", {len(LEGACY_ENCODINGS)} legacy encodings, zone names (“{zone}”)"
    if problems:
        raise RuntimeError("; ".join(problems))
    return detail


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def run(out: TextIO | None = None) -> int:
    """Run the self-test; returns the exit code."""
    return asyncio.run(_self_test(out or sys.stdout))
