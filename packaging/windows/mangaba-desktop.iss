; Inno Setup 6 installer of Mangaba Desktop, made from the one-folder build in dist\mangaba-desktop.
;
;     iscc /DAppVersion=<version> packaging\windows\mangaba-desktop.iss
;
; packaging\build-windows.ps1 passes the package's version; the installer lands in dist\ as
; mangaba-desktop-<version>-windows-x64-setup.exe. It installs for the current user without
; asking for administrator rights; the first page offers an install for all users instead.

#ifndef AppVersion
  #error Pass the version: iscc /DAppVersion=<version> packaging\windows\mangaba-desktop.iss
#endif

#define AppName "Mangaba Desktop"
#define AppExeName "mangaba-desktop.exe"

[Setup]
; The AppId ties every version to one entry in Apps & features, so an upgrade replaces the
; installed copy instead of adding a second one. Never change it.
AppId={{B268E251-46ED-4477-B645-CCFD5F83820B}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Mangaba
; Sources, the icon and the output folder are found from the repository root, two folders up.
SourceDir=..\..
OutputDir=dist
OutputBaseFilename=mangaba-desktop-{#AppVersion}-windows-x64-setup
SetupIconFile=resources\icons\mangaba-desktop.ico
UninstallDisplayIcon={app}\{#AppExeName}
UninstallDisplayName={#AppName}
; {autopf} is the user's own Programs folder in a per-user install and Program Files in an
; install for all users.
DefaultDirName={autopf}\{#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
; The build is 64-bit only (x64, and Windows on Arm through its x64 emulation).
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
; Most of the size is the embedded model and Qt: one solid LZMA2 stream packs them best.
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"
Name: "brazilianportuguese"; MessagesFile: "compiler:Languages\BrazilianPortuguese.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[InstallDelete]
; An upgrade must not leave the previous version's libraries beside the new ones, where Python
; could still import a stale module. The user's data lives elsewhere and is not touched.
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "dist\mangaba-desktop\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExeName}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExeName}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExeName}"; Description: "{cm:LaunchProgram,{#StringChange(AppName, '&', '&&')}}"; Flags: nowait postinstall skipifsilent
