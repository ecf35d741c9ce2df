; Inno Setup 6 (6.3 or later) script: the Windows installer of the AI Service Platform.
;
; On Windows, build the bundle first, then compile this script (docs/packaging.md has the details):
;     make package                      (or: .venv\Scripts\python packaging\build.py)
;     iscc installer.iss                -> dist\ai-service-platform-<version>-setup.exe
;
; The version comes from pyproject.toml through build\version.iss, which packaging\build.py writes;
; `iscc /DAppVersion=1.2.3 installer.iss` overrides it.
;
; The user's data (API keys, usage, settings, the server secret) is never in {app}: it lives in
; %LOCALAPPDATA%\ai-service-platform (platformdirs.user_data_dir("ai-service-platform", appauthor=False)),
; so upgrades keep it, and the uninstaller removes it only when the user says so.

#ifndef AppVersion
  #include "build\version.iss"
#endif
#define AppName "AI Service Platform"
#define AppExeName "ai-service-platform.exe"
#define BundleDir "dist\ai-service-platform"
#define DataDirName "ai-service-platform"

[Setup]
; Never change AppId: upgrades find the installed version (and its folder) by it.
AppId={{0DA25B5A-C00B-4045-8468-31F1BF9363F5}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=AI Service Platform
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
; Installs for the current user without elevation; the dialog offers "all users" (which elevates).
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=dist
OutputBaseFilename=ai-service-platform-{#AppVersion}-setup
SetupIconFile=resources\icons\ai-service-platform.ico
UninstallDisplayIcon={app}\{#AppExeName}
UninstallDisplayName={#AppName}
Compression=lzma2
SolidCompression=yes
LZMAUseSeparateProcess=yes
WizardStyle=modern
; A running copy holds its files open: ask to close it rather than fail half-way.
CloseApplications=yes
RestartApplications=no

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "startatlogin"; Description: "Start when I log in, serving in the background (icon in the system tray)"; GroupDescription: "Background:"; Flags: unchecked

[InstallDelete]
; An upgrade replaces the program's libraries whole, so none of the old version's linger beside the new ones.
; Only program files live here; the user's data is elsewhere (see above).
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "{#BundleDir}\{#AppExeName}"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#BundleDir}\_internal\*"; DestDir: "{app}\_internal"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExeName}"; WorkingDir: "{app}"; Comment: "Manage keys, usage and models of your private AI service"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExeName}"; WorkingDir: "{app}"; Tasks: desktopicon

[Registry]
; The same value the window's Settings switch (app/autostart.py) reads and writes; removed on uninstall.
Root: HKCU; Subkey: "Software\Microsoft\Windows\CurrentVersion\Run"; ValueType: string; ValueName: "{#AppName}"; ValueData: """{app}\{#AppExeName}"" --background"; Tasks: startatlogin; Flags: uninsdeletevalue

[Run]
Filename: "{app}\{#AppExeName}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
Type: dirifempty; Name: "{app}"

[Code]
function UserDataDir(): String;
begin
  Result := ExpandConstant('{localappdata}\{#DataDirName}');
end;

{ The data stays unless the user asks, at uninstall time, for it to go. A silent uninstall keeps it. }
procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  Dir: String;
begin
  if CurUninstallStep <> usPostUninstall then
    Exit;
  Dir := UserDataDir();
  if UninstallSilent() or not DirExists(Dir) then
    Exit;
  if MsgBox('Also delete your AI Service Platform data?' + #13#10 + #13#10 +
            'Your API keys, usage history and settings are in' + #13#10 + Dir + #13#10 + #13#10 +
            'Choose No to keep them: a later installation will use them again.',
            mbConfirmation, MB_YESNO or MB_DEFBUTTON2) = IDYES then
  begin
    if not DelTree(Dir, True, True, True) then
      MsgBox('Some of ' + Dir + ' could not be deleted (is the program still running?).', mbError, MB_OK);
  end;
end;
