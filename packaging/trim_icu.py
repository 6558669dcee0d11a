"""Trim the ICU data that Qt brings on Linux to what Qt reads from it.

PySide6's Linux Qt links ICU, whose data library (``libicudata.so.<N>``, about 31 MB) holds
every locale's names of languages, currencies, units and time zones, break-iteration
dictionaries, transliterators and some 190 legacy character sets. Qt calls ICU for four
things only (the ICU symbols its libraries import say so):

- collation (``QCollator``, locale-aware sorting): the ``coll/`` tree, kept whole;
- case mapping (``QLocale::toUpper``/``toLower``): ICU's core properties, kept;
- legacy character sets (``QStringDecoder``/``QStringEncoder`` by name, HTML charset
  detection): the encodings of the WHATWG Encoding Standard are kept, the others
  (EBCDIC, old IBM code pages) go;
- time-zone names (``QTimeZone::displayName``): the root and English names are kept, so
  every zone still has a name, in English.

Everything else goes: locale display data (``lang/``, ``region/``, ``curr/``, ``unit/``, the
per-locale calendars and number formats), ``brkitr/`` (Qt breaks text itself), ``translit/``,
``rbnf/`` and Unicode character names. The result is about 6 MB.

The data is taken out of the library, trimmed with ICU's ``icupkg`` and assembled back into a
library of the same name and entry symbol with ``genccode`` and the C compiler (Debian's
``icu-devtools`` and ``build-essential``). ``icupkg`` refuses to drop an item a kept one
depends on; such items are kept.

    python packaging/trim_icu.py dist/mangaba-desktop      # in place

Exits 0 when trimmed (or already trimmed), 1 when trimming failed and 2 when a tool is
missing; in both cases the library is left as it was.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Trees of the data that Qt never reads.
DROPPED_TREES = {"brkitr", "curr", "lang", "region", "unit", "translit", "rbnf"}
# Time-zone names: root (the "GMT+01:00" forms) and English.
KEPT_ZONE_NAMES = {"zone/root.res", "zone/pool.res", "zone/res_index.res", "zone/en.res"}
DROPPED_FILES = {"unames.icu"}
KEPT_FILES = {"res_index.res"}
"""The top-level index of locales: named like a locale bundle, and kept."""
# A top-level locale bundle (de.res, zh_Hant_TW.res, es_419.res): calendars, number formats,
# display patterns. Not matched: root.res, pool.res and the supplemental tables
# (likelySubtags.res, supplementalData.res, zoneinfo64.res, metaZones.res ...).
LOCALE_BUNDLE = re.compile(r"[a-z]{2,3}(_[A-Za-z0-9]+)*\.res")
# ICU's converters for the WHATWG Encoding Standard's legacy encodings, by their ICU names.
KEPT_CONVERTERS = {
    "ibm-866_P100-1995",  # IBM866
    "ibm-912_P100-1995",  # ISO-8859-2
    "ibm-913_P100-2000",  # ISO-8859-3
    "ibm-914_P100-1995",  # ISO-8859-4
    "ibm-915_P100-1995",  # ISO-8859-5
    "ibm-1089_P100-1995",  # ISO-8859-6
    "ibm-9005_X110-2007",  # ISO-8859-7
    "ibm-5012_P100-1999",  # ISO-8859-8
    "iso-8859_10-1998",  # ISO-8859-10
    "ibm-921_P100-1995",  # ISO-8859-13
    "iso-8859_14-1998",  # ISO-8859-14
    "ibm-923_P100-1998",  # ISO-8859-15
    "ibm-878_P100-1996",  # KOI8-R
    "ibm-1168_P100-2002",  # KOI8-U
    "macos-0_2-10.2",  # macintosh
    "macos-7_3-10.2",  # x-mac-cyrillic
    "windows-874-2000",  # windows-874
    "ibm-5346_P100-1998",  # windows-1250
    "ibm-5347_P100-1998",  # windows-1251
    "ibm-5348_P100-1997",  # windows-1252
    "ibm-5349_P100-1998",  # windows-1253
    "ibm-5350_P100-1998",  # windows-1254
    "ibm-9447_P100-2002",  # windows-1255
    "ibm-9448_X100-2005",  # windows-1256
    "ibm-9449_P100-2002",  # windows-1257
    "ibm-5354_P100-1998",  # windows-1258
    "windows-936-2000",  # GBK
    "ibm-1383_P110-1999",  # GB2312 (a label of GBK there, a charset of its own in ICU)
    "gb18030",  # gb18030
    "windows-950-2000",  # Big5
    "ibm-1375_P100-2008",  # Big5-HKSCS (a label of Big5 there)
    "euc-jp-2007",  # EUC-JP
    "ibm-943_P15A-2003",  # Shift_JIS
    "jisx-212",  # ISO-2022-JP's JIS X 0212 part
    "ibm-970_P110_P110-2006_U2",  # EUC-KR
}
TOOLS = ("readelf", "objcopy", "icupkg", "genccode", "cc")
MISSING_DEPENDENCY = re.compile(r"depends on missing item (\S+)")


class TrimError(RuntimeError):
    pass


def dropped(item: str) -> bool:
    """Whether an item of the ICU package (``coll/de.res``, ``ibm-37_P100-1995.cnv``) goes."""
    tree = item.rpartition("/")[0]
    if tree:
        return tree in DROPPED_TREES or (tree == "zone" and item not in KEPT_ZONE_NAMES)
    if item in DROPPED_FILES:
        return True
    if item in KEPT_FILES:
        return False
    if item.endswith(".cnv"):
        return item.removesuffix(".cnv") not in KEPT_CONVERTERS
    return LOCALE_BUNDLE.fullmatch(item) is not None


def find_library(bundle: Path) -> Path:
    found = sorted(p for p in bundle.rglob("libicudata.so.*") if not p.is_symlink())
    if len(found) != 1:
        raise TrimError(f"expected one libicudata.so.* in {bundle}, found {len(found)}")
    return found[0]


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise TrimError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def extract_data(library: Path, symbol: str, into: Path) -> None:
    """Write the bytes of the data symbol to ``into`` (it sits in .rodata, from its start)."""
    symbols = _run("readelf", "-sW", "--dyn-syms", library)
    size = None
    for line in symbols.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[7] == symbol and fields[3] == "OBJECT":
            value, size = int(fields[1], 16), int(fields[2], 0)
            break
    if size is None:
        raise TrimError(f"{library.name} has no {symbol}")
    sections = _run("readelf", "-SW", library)
    # [Nr] Name  Type  Address  Off  Size ...
    match = re.search(r"\]\s+\.rodata\s+PROGBITS\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", sections)
    if not match:
        raise TrimError(f"{library.name} has no .rodata")
    address, section_size = int(match[1], 16), int(match[2], 16)
    start = value - address
    if start < 0 or start + size > section_size:
        raise TrimError(f"{symbol} is not inside .rodata")
    raw = into.with_suffix(".rodata")
    _run("objcopy", "-O", "binary", "--only-section=.rodata", library, raw)
    into.write_bytes(raw.read_bytes()[start : start + size])
    raw.unlink()


def trim(library: Path, work: Path) -> tuple[int, int, int]:
    """Trim ``library`` in place; returns (bytes before, bytes after, items kept)."""
    major = re.fullmatch(r"libicudata\.so\.(\d+)(\..*)?", library.name)
    if not major:
        raise TrimError(f"not an ICU data library: {library.name}")
    version = major[1]
    symbol = f"icudt{version}_dat"
    # icupkg names a package's items after its file name: the name ICU itself uses.
    package = work / f"icudt{version}l.dat"
    extract_data(library, symbol, package)
    items = _run("icupkg", "-l", package).split()
    if not items:
        raise TrimError("the ICU package lists no items")
    removed = [item for item in items if dropped(item)]
    if not removed:
        return library.stat().st_size, library.stat().st_size, len(items)

    trimmed_dir = work / "trimmed"
    trimmed_dir.mkdir()
    trimmed = trimmed_dir / package.name
    remove_list = work / "remove.txt"
    for _ in range(20):
        remove_list.write_text("\n".join(removed) + "\n", encoding="ascii")
        done = subprocess.run(
            ["icupkg", "-r", str(remove_list), str(package), str(trimmed)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            break
        needed = set(MISSING_DEPENDENCY.findall(done.stdout + done.stderr))
        if not needed:
            raise TrimError(f"icupkg failed ({done.returncode}): {done.stderr.strip()}")
        removed = [item for item in removed if item not in needed]
    else:
        raise TrimError("icupkg kept finding missing dependencies")

    _run("genccode", "--quiet", "-e", f"icudt{version}", "-a", "gcc", trimmed.name, cwd=trimmed_dir)
    assembly = trimmed_dir / f"icudt{version}l_dat.S"
    built = trimmed_dir / library.name
    soname = f"libicudata.so.{version}"
    _run(
        "cc",
        "-shared",
        "-nostdlib",
        f"-Wl,-soname,{soname}",
        "-Wl,-z,noexecstack",
        "-Wl,-rpath,$ORIGIN",
        "-o",
        built,
        assembly,
    )
    before = library.stat().st_size
    shutil.copymode(library, built)
    built.replace(library)
    return before, library.stat().st_size, len(items) - len(removed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the one-folder build (dist/mangaba-desktop)")
    args = parser.parse_args(argv)

    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(
            f"ICU data left whole: {', '.join(missing)} not found (Debian: icu-devtools, "
            "binutils, build-essential)"
        )
        return 2
    try:
        library = find_library(args.bundle)
        # Beside the library: the trimmed one replaces it by a rename, which cannot cross
        # from a temporary file system (a tmpfs /tmp) to the build's.
        with tempfile.TemporaryDirectory(prefix=".trim-icu-", dir=library.parent) as folder:
            before, after, kept = trim(library, Path(folder))
    except (OSError, TrimError) as exc:
        print(f"ICU data not trimmed: {exc}", file=sys.stderr)
        return 1
    if before == after:
        print(f"{library.name}: already trimmed ({after / 1e6:.1f} MB)")
    else:
        print(f"{library.name}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB ({kept} items kept)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
