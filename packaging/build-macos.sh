#!/usr/bin/env bash
# Build the macOS release: the app bundle, checked with --self-test, signed, packed in a .dmg
# and notarised.
#
#     bash packaging/build-macos.sh
#     PYTHON=python3.11 VENV=build/venv bash packaging/build-macos.sh
#
# Signing and notarisation run only when their variables are set, and say so when they do not:
#   MACOS_SIGN_IDENTITY   a "Developer ID Application: ..." identity in the keychain
#   MACOS_NOTARY_PROFILE  a notarytool keychain profile (xcrun notarytool store-credentials),
#   or APPLE_ID, APPLE_TEAM_ID and APPLE_APP_PASSWORD (an app-specific password)
#
# Outputs in dist/: "Mangaba Desktop.app" and mangaba-desktop-<version>-macos-<arch>.dmg.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
# Apart from a development .venv, whose editable install `pip install .` would replace;
# build/ is ignored by git.
VENV=${VENV:-build/venv}
ENTITLEMENTS=packaging/macos/entitlements.plist
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

stage() { printf '\n=== [%4ds] %s\n' "$SECONDS" "$*"; }

stage "build environment"
"$PYTHON" -m venv "$VENV"
VENV_PYTHON=$VENV/bin/python
"$VENV_PYTHON" -m pip install --quiet . -r packaging/requirements-build.txt
VERSION=$("$VENV_PYTHON" -c 'import mangaba_desktop; print(mangaba_desktop.__version__)')
ARCH=$(uname -m)
echo "Mangaba Desktop $VERSION for macos-$ARCH"

stage "pyinstaller"
APP="dist/Mangaba Desktop.app"
rm -rf "$APP" dist/mangaba-desktop
"$VENV_PYTHON" -m PyInstaller packaging/mangaba-desktop.spec --noconfirm \
    --distpath dist --workpath build

stage "self-test of the built app"
"$APP/Contents/MacOS/mangaba-desktop" --self-test

SIGNED=false
if [[ -n ${MACOS_SIGN_IDENTITY:-} ]]; then
    stage "code signing"
    # The hardened runtime (--options runtime) is what notarisation requires; the entitlements
    # relax it just enough for Python's ctypes and the bundled libraries.
    codesign --deep --force --options runtime --timestamp \
        --entitlements "$ENTITLEMENTS" --sign "$MACOS_SIGN_IDENTITY" "$APP"
    codesign --verify --deep --strict --verbose=2 "$APP"
    SIGNED=true
else
    echo
    echo "MACOS_SIGN_IDENTITY is not set: the app keeps PyInstaller's ad-hoc signature and"
    echo "Gatekeeper will block it on other Macs. Not signed, not notarised."
fi

# The notarytool credentials, as its arguments. (The flag, not the array's length, says whether
# there are any: macOS's own bash 3.2 treats an empty array as unset under `set -u`.)
HAVE_NOTARY_AUTH=false
if [[ -n ${MACOS_NOTARY_PROFILE:-} ]]; then
    NOTARY_AUTH=(--keychain-profile "$MACOS_NOTARY_PROFILE")
    HAVE_NOTARY_AUTH=true
elif [[ -n ${APPLE_ID:-} && -n ${APPLE_TEAM_ID:-} && -n ${APPLE_APP_PASSWORD:-} ]]; then
    NOTARY_AUTH=(--apple-id "$APPLE_ID" --team-id "$APPLE_TEAM_ID" --password "$APPLE_APP_PASSWORD")
    HAVE_NOTARY_AUTH=true
fi
NOTARISE=false
if $SIGNED && $HAVE_NOTARY_AUTH; then
    NOTARISE=true
elif $SIGNED; then
    echo
    echo "Neither MACOS_NOTARY_PROFILE nor APPLE_ID, APPLE_TEAM_ID and APPLE_APP_PASSWORD is set:"
    echo "signed but not notarised, so Gatekeeper will still warn on first start."
fi

# Submits one file and waits for Apple's verdict. notarytool can exit 0 on a rejected
# submission, so the status in its JSON answer decides; on rejection its log says why.
notarise() {
    local file=$1 answer status submission
    answer=$(xcrun notarytool submit "$file" "${NOTARY_AUTH[@]}" --wait --output-format json)
    status=$("$VENV_PYTHON" -c 'import json, sys; print(json.load(sys.stdin).get("status", ""))' \
        <<<"$answer")
    submission=$("$VENV_PYTHON" -c 'import json, sys; print(json.load(sys.stdin).get("id", ""))' \
        <<<"$answer")
    echo "notarisation of $file: ${status:-no status} (submission ${submission:-unknown})"
    if [[ $status != Accepted ]]; then
        if [[ -n $submission ]]; then
            xcrun notarytool log "$submission" "${NOTARY_AUTH[@]}" || true
        fi
        return 1
    fi
}

if $NOTARISE; then
    stage "notarising the app"
    # The app gets its own ticket stapled, so that its first start needs no network: this is
    # an offline-first app. notarytool takes a .zip of it, not the bundle itself.
    APP_ZIP=build/mangaba-desktop-notarise.zip
    rm -f "$APP_ZIP"
    ditto -c -k --keepParent "$APP" "$APP_ZIP"
    notarise "$APP_ZIP"
    rm -f "$APP_ZIP"
    xcrun stapler staple "$APP"
fi

stage "disk image"
DMG=dist/mangaba-desktop-$VERSION-macos-$ARCH.dmg
# The window shows the app beside a link to /Applications, to drag one onto the other.
STAGING=build/dmg
rm -rf "$STAGING"
mkdir -p "$STAGING"
ditto "$APP" "$STAGING/Mangaba Desktop.app"  # ditto keeps the signature's extended attributes
ln -s /Applications "$STAGING/Applications"
hdiutil create -volname "Mangaba Desktop" -srcfolder "$STAGING" -ov -format UDZO "$DMG"
rm -rf "$STAGING"

if $SIGNED; then
    codesign --force --timestamp --sign "$MACOS_SIGN_IDENTITY" "$DMG"
    codesign --verify --verbose=2 "$DMG"
fi
if $NOTARISE; then
    stage "notarising the disk image"
    notarise "$DMG"
    xcrun stapler staple "$DMG"
    xcrun stapler validate "$DMG"
fi
ls -l "$DMG"
stage "done"
