#!/usr/bin/env bash
# Build the Linux binary: the one-folder build, checked with --self-test, packed as .tar.gz,
# and an AppImage when appimagetool is on PATH.
#
#     bash packaging/build-linux.sh            # uses .venv (made by .ci/run or by hand)
#     PYTHON=/path/to/python bash packaging/build-linux.sh
#
# Outputs in dist/: mangaba-desktop/ (the folder), mangaba-desktop-<version>-linux-<arch>.tar.gz
# and, with appimagetool, Mangaba_Desktop-<version>-<arch>.AppImage. Prints the folder's size
# and the binary's cold start (to the first painted window) against the source install.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}

stage() { printf '\n=== [%4ds] %s\n' "$SECONDS" "$*"; }

stage "build tools"
"$PYTHON" -m pip install --quiet -r packaging/requirements-build.txt
VERSION=$("$PYTHON" -c 'import mangaba_desktop; print(mangaba_desktop.__version__)')
ARCH=$(uname -m)
echo "Mangaba Desktop $VERSION for linux-$ARCH"

stage "pyinstaller"
rm -rf build/pyinstaller dist/mangaba-desktop
"$PYTHON" -m PyInstaller packaging/mangaba-desktop.spec --noconfirm --log-level WARN \
    --distpath dist --workpath build/pyinstaller
BINARY=dist/mangaba-desktop/mangaba-desktop

stage "strip debug symbols"
# Not numpy's bundled OpenBLAS: it does not survive strip (the self-test below would say).
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

stage "size and cold start"
SIZE_MB=$(du -sm dist/mangaba-desktop | cut -f1)
echo "one-folder build: ${SIZE_MB} MB (goal: under 350 MB, the model included)"
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
    cp resources/linux/io.github.mangaba.Desktop.desktop "$APPDIR/usr/share/applications/"
    cp resources/linux/io.github.mangaba.Desktop.desktop "$APPDIR/"
    cp resources/linux/io.github.mangaba.Desktop.metainfo.xml "$APPDIR/usr/share/metainfo/"
    cp resources/icons/mangaba-desktop-256.png \
        "$APPDIR/usr/share/icons/hicolor/256x256/apps/io.github.mangaba.Desktop.png"
    cp resources/icons/mangaba-desktop-256.png "$APPDIR/io.github.mangaba.Desktop.png"
    ln -s usr/bin/mangaba-desktop "$APPDIR/AppRun"
    ARCH=$ARCH appimagetool --no-appstream "$APPDIR" "dist/Mangaba_Desktop-$VERSION-$ARCH.AppImage"
else
    echo "appimagetool is not on PATH: no AppImage (the .tar.gz is the Linux download)"
fi
stage "done"
