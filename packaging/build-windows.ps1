<#
.SYNOPSIS
    Build the Windows release of Mangaba Desktop: the one-folder build, checked with
    --self-test, a .zip of it and, when Inno Setup 6 is installed, the installer.

.DESCRIPTION
    Run from any folder:

        powershell -ExecutionPolicy Bypass -File packaging\build-windows.ps1 [-Python py] [-Venv build\venv]

    Outputs in dist\: mangaba-desktop\ (the folder), mangaba-desktop-<version>-windows-x64.zip
    and mangaba-desktop-<version>-windows-x64-setup.exe.

    Building llama-cpp-python from source needs the Visual Studio C++ build tools and CMake.

.PARAMETER Python
    The Python 3.11+ (64-bit) that creates the build environment.

.PARAMETER Venv
    The build environment. It lives apart from a development .venv because `pip install .`
    would replace that one's editable install; build\ is ignored by git.
#>
[CmdletBinding()]
param(
    [string] $Python = 'python',
    [string] $Venv = 'build\venv'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$Root = Split-Path -Parent $PSScriptRoot
Set-Location $Root
$env:PIP_DISABLE_PIP_VERSION_CHECK = '1'
$env:PIP_NO_INPUT = '1'

function Write-Stage([string] $Message) {
    Write-Host ''
    Write-Host "=== $Message"
}

# A native program's failure does not stop a PowerShell script by itself: check every one.
function Assert-Success([string] $What) {
    if ($LASTEXITCODE -ne 0) {
        throw "$What failed (exit code $LASTEXITCODE)"
    }
}

Write-Stage 'build environment'
if (-not [System.IO.Path]::IsPathRooted($Venv)) { $Venv = Join-Path $Root $Venv }
& $Python -m venv $Venv
Assert-Success 'creating the virtual environment'
$VenvPython = Join-Path $Venv 'Scripts\python.exe'
& $VenvPython -m pip install --quiet . -r packaging\requirements-build.txt
Assert-Success 'installing the app and the build tools'

$Version = & $VenvPython -c 'import mangaba_desktop; print(mangaba_desktop.__version__)'
Assert-Success 'reading the version'
$Version = "$Version".Trim()
# The installer is declared x64; a build made with an Arm64 or 32-bit Python would not match it.
# (sysconfig names the interpreter's own build; platform.machine() names the OS's, even for a
# 32-bit Python.)
$Platform = & $VenvPython -c 'import sysconfig; print(sysconfig.get_platform())'
Assert-Success 'reading the architecture'
$Platform = "$Platform".Trim()
if ($Platform -ne 'win-amd64') {
    throw "This build makes x64 packages: use a 64-bit x64 Python (this one is $Platform)"
}
Write-Host "Mangaba Desktop $Version for windows-x64"

Write-Stage 'pyinstaller'
$Folder = 'dist\mangaba-desktop'
if (Test-Path $Folder) { Remove-Item -Recurse -Force $Folder }
& $VenvPython -m PyInstaller packaging\mangaba-desktop.spec --noconfirm --distpath dist --workpath build
Assert-Success 'PyInstaller'

Write-Stage 'self-test of the built program'
# mangaba-desktop.exe is a GUI program: PowerShell neither waits for it nor sets $LASTEXITCODE
# when it is called directly, so it is started and awaited, and its output read from files.
$Executable = Join-Path $Root 'dist\mangaba-desktop\mangaba-desktop.exe'
$OutputLog = Join-Path $env:TEMP "mangaba-self-test-$PID.out"
$ErrorLog = Join-Path $env:TEMP "mangaba-self-test-$PID.err"
$SelfTest = Start-Process -FilePath $Executable -ArgumentList '--self-test' -Wait -PassThru `
    -NoNewWindow -RedirectStandardOutput $OutputLog -RedirectStandardError $ErrorLog
Get-Content $OutputLog, $ErrorLog -ErrorAction SilentlyContinue | Write-Host
Remove-Item $OutputLog, $ErrorLog -ErrorAction SilentlyContinue
if ($SelfTest.ExitCode -ne 0) {
    throw "The built program failed its self-test (exit code $($SelfTest.ExitCode))"
}

Write-Stage 'zip'
# .NET's ZipFile rather than Compress-Archive: quicker on a folder this size, and
# Windows PowerShell 5.1's Compress-Archive writes backslashes into entry names, which other
# systems' unzip tools take as part of a file name. Absolute paths, because .NET does not
# follow PowerShell's current location.
Add-Type -AssemblyName System.IO.Compression.FileSystem
$Zip = Join-Path $Root "dist\mangaba-desktop-$Version-windows-x64.zip"
if (Test-Path $Zip) { Remove-Item -Force $Zip }
[System.IO.Compression.ZipFile]::CreateFromDirectory(
    (Join-Path $Root $Folder), $Zip, [System.IO.Compression.CompressionLevel]::Optimal, $true)
Get-Item $Zip | Format-Table -AutoSize Name, Length

Write-Stage 'installer'
$Iscc = (Get-Command iscc -ErrorAction SilentlyContinue | Select-Object -First 1 -ExpandProperty Source)
if (-not $Iscc) {
    # Inno Setup's installer does not put ISCC on PATH: look where it installs (a per-user
    # install goes to %LOCALAPPDATA%\Programs).
    $Bases = @(${env:ProgramFiles(x86)}, $env:ProgramFiles)
    if ($env:LOCALAPPDATA) { $Bases += Join-Path $env:LOCALAPPDATA 'Programs' }
    $Iscc = $Bases | Where-Object { $_ } | ForEach-Object { Join-Path $_ 'Inno Setup 6\ISCC.exe' } |
        Where-Object { Test-Path $_ } | Select-Object -First 1
}
if ($Iscc) {
    & $Iscc "/DAppVersion=$Version" packaging\windows\mangaba-desktop.iss
    Assert-Success 'Inno Setup'
    Get-Item "dist\mangaba-desktop-$Version-windows-x64-setup.exe" | Format-Table -AutoSize Name, Length
} else {
    Write-Host 'Inno Setup 6 (ISCC.exe) was not found: no installer; the .zip is the download.'
}

Write-Stage 'done'
