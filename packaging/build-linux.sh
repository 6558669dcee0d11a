#!/usr/bin/env bash
# Build the Linux binary: the one-folder build, checked with --self-test, packed as .tar.gz,
# and an AppImage when appimagetool is on PATH.
#
#     bash packaging/build-linux.sh            # uses .venv (made by .ci/run or by hand)
#     PYTHON=/path/to/python bash packaging/build-linux.sh
#
# Needs a C compiler and, to trim Qt's ICU data, ICU's tools (Debian: build-essential,
# icu-devtools). Outputs in dist/: mangaba-desktop/ (the folder),
# mangaba-desktop-<version>-linux-<arch>.tar.gz and, with appimagetool,
# Mangaba_Desktop-<version>-<arch>.AppImage. Prints the folder's size and the binary's cold
# start (to the first painted window) against the source install.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}

stage() { printf '\n=== [%4ds] %s\n' "$SECONDS" "$*"; }

stage "build tools"
"$PYTHON" -m pip install --quiet -r packaging/requirements-build.txt
VERSION=$("$PYTHON" -c 'import mangaba_desktop; print(mangaba_desktop.__version__)')
DESKTOP_ID=$("$PYTHON" -c 'import mangaba_desktop; print(mangaba_desktop.DESKTOP_ID)')
ARCH=$(uname -m)
echo "Mangaba Desktop $VERSION for linux-$ARCH"

stage "numpy without OpenBLAS"
# The charts need numpy, but none of its linear algebra: numpy built without BLAS and LAPACK
# (its own plain routines stand in) spares the OpenBLAS and gfortran its wheel bundles, 28 MB.
# Built once per numpy version (a few minutes) and kept in the user's cache; the build's
# analysis finds it first. NUMPY_BLAS=keep bundles the installed numpy as it is.
NUMPY_PATH=""
if [[ ${NUMPY_BLAS:-none} == none ]]; then
    NUMPY_VERSION=$("$PYTHON" -c 'import numpy; print(numpy.__version__)')
    PYTHON_TAG=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    WHEELS=${XDG_CACHE_HOME:-$HOME/.cache}/mangaba-desktop/numpy-noblas
    # Made first: find fails on a missing folder, and with pipefail that ends the script.
    mkdir -p "$WHEELS"
    cached_wheel() { find "$WHEELS" -name "numpy-$NUMPY_VERSION-$PYTHON_TAG-*.whl" | head -n 1; }
    WHEEL=$(cached_wheel)
    if [[ -z $WHEEL ]]; then
        echo "building numpy $NUMPY_VERSION without BLAS into $WHEELS (once)"
        "$PYTHON" -m pip wheel --quiet --no-deps --no-binary numpy "numpy==$NUMPY_VERSION" \
            -w "$WHEELS" -Csetup-args=-Dblas=none -Csetup-args=-Dlapack=none \
            -Csetup-args=-Dallow-noblas=true || true
        WHEEL=$(cached_wheel)
    fi
    if [[ -n $WHEEL ]]; then
        NUMPY_PATH=$ROOT/build/numpy-noblas
        rm -rf "$NUMPY_PATH"
        "$PYTHON" -m pip install --quiet --no-deps --target "$NUMPY_PATH" "$WHEEL"
        echo "bundling $(basename "$WHEEL") (no BLAS)"
    else
        echo "numpy could not be built without BLAS: the installed numpy (with OpenBLAS) goes in"
    fi
fi

stage "pyinstaller"
rm -rf build/pyinstaller dist/mangaba-desktop
(
    # Only the build sees that numpy: the source install timed below keeps its own.
    if [[ -n $NUMPY_PATH ]]; then export PYTHONPATH=$NUMPY_PATH${PYTHONPATH:+:$PYTHONPATH}; fi
    "$PYTHON" -m PyInstaller packaging/mangaba-desktop.spec --noconfirm --log-level WARN \
        --distpath dist --workpath build/pyinstaller
)
BINARY=dist/mangaba-desktop/mangaba-desktop

stage "strip debug symbols"
# Not the OpenBLAS a stock numpy bundles: it does not survive strip (the self-test would say).
find dist/mangaba-desktop -name '*.so*' -type f ! -path '*/numpy.libs/*' \
    -exec strip --strip-unneeded {} + 2>/dev/null || true

stage "trim Qt's ICU data to what Qt reads"
# 31 MB of locale display names, dictionaries and code pages Qt never asks for (see the
# script). Without ICU's tools (Debian: icu-devtools) the data stays whole.
"$PYTHON" packaging/trim_icu.py dist/mangaba-desktop || [[ $? == 2 ]]

# PyInstaller copies a library's symbolic links as files: llama.cpp's come twice (the name it
# loads and the name the others link to). Links again.
for library in dist/mangaba-desktop/_internal/llama_cpp/lib/*.so.*; do
    plain=${library%%.so.*}.so
    if [[ -f $plain && ! -L $plain ]] && cmp -s "$library" "$plain"; then
        ln -sf "$(basename "$library")" "$plain"
    fi
done

stage "self-test of the built binary"
# A throwaway HOME: the check must not read or write the builder's own data or keyring.
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
HOME=$SCRATCH "$BINARY" --self-test
# The menu entry it writes for itself points at this folder and is valid.
HOME=$SCRATCH XDG_DATA_HOME=$SCRATCH/share "$BINARY" --install-desktop-entry
ENTRY=$SCRATCH/share/applications/$DESKTOP_ID.desktop
EXEC_LINE=$("$PYTHON" -c 'import sys; from mangaba_desktop.desktop_entry import exec_argument
print("Exec=" + exec_argument(sys.argv[1]))' "$ROOT/$BINARY")
grep -qxF "$EXEC_LINE" "$ENTRY"
grep -qxF "TryExec=$ROOT/$BINARY" "$ENTRY"
if command -v desktop-file-validate >/dev/null 2>&1; then desktop-file-validate "$ENTRY"; fi

stage "size and cold start"
SIZE_BYTES=$(du -sb dist/mangaba-desktop | cut -f1)
echo "one-folder build: $((SIZE_BYTES / 1000000)) MB ($((SIZE_BYTES / 1048576)) MiB; goal: under 350 MB, the model included)"
"$PYTHON" packaging/start_time.py --binary "$BINARY" --python "$PYTHON" --runs "${START_RUNS:-5}"

stage "archive"
TARBALL=dist/mangaba-desktop-$VERSION-linux-$ARCH.tar.gz
tar -C dist -czf "$TARBALL" mangaba-desktop
ls -l "$TARBALL"

if command -v appimagetool >/dev/null 2>&1; then
    stage "AppImage"
    APPDIR=build/Mangaba_Desktop.AppDir
    rm -rf "$APPDIR"
    mkdir -p "$APPDIR/usr/bin" "$APPDIR/usr/share/applications" \
        "$APPDIR/usr/share/metainfo" "$APPDIR/usr/share/icons/hicolor/256x256/apps"
    cp -a dist/mangaba-desktop "$APPDIR/usr/lib-mangaba"
    ln -s ../lib-mangaba/mangaba-desktop "$APPDIR/usr/bin/mangaba-desktop"
    cp "mangaba_desktop/linux/$DESKTOP_ID.desktop" "$APPDIR/usr/share/applications/"
    cp "mangaba_desktop/linux/$DESKTOP_ID.desktop" "$APPDIR/"
    cp "resources/linux/$DESKTOP_ID.metainfo.xml" "$APPDIR/usr/share/metainfo/"
    cp resources/icons/mangaba-desktop-256.png \
        "$APPDIR/usr/share/icons/hicolor/256x256/apps/$DESKTOP_ID.png"
    cp resources/icons/mangaba-desktop-256.png "$APPDIR/$DESKTOP_ID.png"
    ln -s usr/bin/mangaba-desktop "$APPDIR/AppRun"
    ARCH=$ARCH appimagetool --no-appstream "$APPDIR" "dist/Mangaba_Desktop-$VERSION-$ARCH.AppImage"
else
    echo "appimagetool is not on PATH: no AppImage (the .tar.gz is the Linux download)"
fi
stage "done"
