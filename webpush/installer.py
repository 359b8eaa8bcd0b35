"""Install and remove the SuiteCRM side of the call popup (`crmagi suitecrm install|uninstall`).

What goes where, and why, is docs/suitecrm.md section 9: a hook registration file
in the Extension folder (compiled by Quick Repair and Rebuild; the compiled file
is never edited by hand), the hook class, its config and the static assets.
Every file and directory install creates is listed in a manifest, so uninstall
removes exactly those and nothing the admin or SuiteCRM put there.
"""
import grp
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import jinja2

TEMPLATES = Path(__file__).parent / "suitecrm"
DEFAULT_STATIC = Path(__file__).parent / "static"

ASSET_DIR = "custom/include/Crmagi"
HOOK_FILE = ASSET_DIR + "/CrmagiPopupHook.php"
CONFIG_FILE = ASSET_DIR + "/config.php"
REGISTRATION = "custom/Extension/application/Ext/LogicHooks/crmagi_popup.php"
TOKEN_FILE = ASSET_DIR + "/token.php"
ENTRY_POINT = "custom/Extension/application/Ext/EntryPointRegistry/crmagi_token.php"
MANIFEST = ASSET_DIR + "/installed.json"
RENDERED = {REGISTRATION: "crmagi_popup.php.j2", HOOK_FILE: "CrmagiPopupHook.php.j2", CONFIG_FILE: "config.php.j2",
            ENTRY_POINT: "crmagi_token.php.j2", TOKEN_FILE: "token.php.j2"}
STATIC = {ASSET_DIR + "/popup.js": "popup.js", ASSET_DIR + "/popup.css": "popup.css",
          ASSET_DIR + "/recordings.js": "recordings.js", ASSET_DIR + "/recordings.css": "recordings.css"}
TARGETS = tuple(RENDERED) + tuple(STATIC)
# The manifest is served like any file under custom/; a hash of config.php would let
# anyone fetch it and try secrets offline, so that file is listed without one.
UNHASHED = {CONFIG_FILE}
MARKERS = ("include/entryPoint.php", "sugar_version.php")
SECRET_MODE = 0o640      # config.php: the owner writes, the web server's group reads, nobody else
SHORT_SECRET = 16

REPAIR = ("next: as a SuiteCRM admin run Admin -> Repair -> Quick Repair and Rebuild "
          "(index.php?module=Administration&action=repair); it %s "
          "custom/application/Ext/LogicHooks/logichooks.ext.php and the entry point registry, "
          "which must not be edited by hand")


class InstallError(Exception):
    """Why nothing (more) was installed or removed; one line for the admin."""


@dataclass
class InstallReport:
    root: str
    written: List[str] = field(default_factory=list)
    created_dirs: List[str] = field(default_factory=list)
    replaced_modified: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def lines(self):
        return (["wrote %s" % path for path in self.written]
                + ["created directory %s" % path for path in self.created_dirs]
                + ["replaced %s, which had been edited since the last install" % path
                   for path in self.replaced_modified]
                + ["WARNING %s" % text for text in self.warnings] + [REPAIR % "adds the hook to"])


@dataclass
class UninstallReport:
    root: str
    removed: List[str] = field(default_factory=list)
    modified: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    removed_dirs: List[str] = field(default_factory=list)
    kept_dirs: List[str] = field(default_factory=list)

    def lines(self):
        return (["removed %s" % path for path in self.removed]
                + ["removed %s although it had been edited since install" % path for path in self.modified]
                + ["already gone: %s" % path for path in self.missing]
                + ["removed directory %s" % path for path in self.removed_dirs]
                + ["kept directory %s: it holds files crmagi did not install" % path for path in self.kept_dirs]
                + [REPAIR % "drops the hook from"])


def check_root(root: Path, force=False):
    if not root.is_dir():
        raise InstallError("%s: not a directory" % root)
    if force or any((root / marker).is_file() for marker in MARKERS):
        return
    hint = ""
    if (root / "public/legacy/include/entryPoint.php").is_file():
        hint = "; for SuiteCRM 8 give its public/legacy folder"
    raise InstallError("%s does not look like a SuiteCRM 7 or SugarCRM CE 6.5 root: neither %s exists%s "
                       "(--force installs anyway)" % (root, " nor ".join(MARKERS), hint))


def php_string(value) -> str:
    """A single-quoted PHP literal: inside one only backslash and quote are special."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _render(values) -> dict:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["php"] = php_string
    values = dict(values, hook_file=HOOK_FILE, asset_dir=ASSET_DIR, token_file=TOKEN_FILE)
    return {path: env.get_template(name).render(values).encode("utf-8") for path, name in RENDERED.items()}


def _static(static_dir: Path) -> dict:
    missing = [name for name in STATIC.values() if not (static_dir / name).is_file()]
    if missing:
        raise InstallError("static files missing in %s: %s" % (static_dir, ", ".join(missing)))
    return {path: (static_dir / name).read_bytes() for path, name in STATIC.items()}


def _validate(secret, ws_url, token_seconds):
    if not secret:
        raise InstallError("secret is empty: set [webpush] secret (e.g. the output of `openssl rand -hex 32`)")
    if not ws_url.startswith(("ws://", "wss://")) or any(ch.isspace() or not ch.isprintable() for ch in ws_url):
        raise InstallError("websocket URL %r: must be ws://host:port/path or wss://..." % ws_url)
    if int(token_seconds) <= 0:
        raise InstallError("token_seconds %r: must be greater than 0" % token_seconds)
    if len(secret) < SHORT_SECRET:
        return ["the secret has fewer than %d characters: every logged-in user holds a token signed "
                "with it and can try to guess it offline" % SHORT_SECRET]
    return []


def _group(gid) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(root: Path):
    path = root / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text("utf-8"))
        return {"files": dict(manifest["files"]), "dirs": list(manifest["dirs"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InstallError("%s: unreadable crmagi manifest (%s); move it away to continue" % (path, exc)) from None


def _write_atomic(path: Path, data: bytes, mode=0o644, owner=None):
    """Readers (PHP on a live CRM) see the old file or the new one, never half of one.
    ``owner``: (uid, gid) given to the file before it appears; -1 keeps one of them."""
    handle, tmp = tempfile.mkstemp(dir=str(path.parent), prefix="." + path.name + ".")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        if owner is not None:
            os.chown(tmp, *owner)        # before chmod: chown may clear mode bits
        os.chmod(tmp, mode)
        os.replace(tmp, str(path))
    except BaseException:
        os.unlink(tmp)
        raise


def _make_dirs(root: Path, paths) -> List[str]:
    """Create the missing parents of paths, top-down; return those created, relative to root."""
    created = []
    for path in paths:
        parts = Path(path).parent.parts
        for depth in range(1, len(parts) + 1):
            relative = "/".join(parts[:depth])
            if not (root / relative).is_dir():
                os.mkdir(str(root / relative), 0o755)
                created.append(relative)
    return created


def _foreign(root: Path, files, manifest) -> List[str]:
    """Targets that exist but that no earlier install of ours wrote."""
    ours = set(manifest["files"]) if manifest else set()
    return [path for path in files if path not in ours and (root / path).exists()]


def install(crm_root, *, secret, ws_url, token_seconds, version, static_dir=None,
            force=False) -> InstallReport:
    """static_dir: where popup.js and popup.css are (default: webpush/static)."""
    root = Path(crm_root)
    check_root(root, force)
    warnings = _validate(secret, ws_url, token_seconds)
    files = _render({"secret": secret, "ws_url": ws_url, "token_seconds": int(token_seconds), "version": version})
    files.update(_static(Path(static_dir or DEFAULT_STATIC)))
    manifest = _read_manifest(root)
    foreign = _foreign(root, files, manifest)
    if foreign:
        raise InstallError("refusing to overwrite %s: not installed by crmagi (no entry in %s); move it away"
                           % (", ".join(foreign), MANIFEST))
    old_files = manifest["files"] if manifest else {}
    report = InstallReport(str(root), warnings=warnings)
    report.replaced_modified = [path for path, digest in old_files.items()
                                if path in files and digest and (root / path).is_file()
                                and _sha256((root / path).read_bytes()) != digest]
    report.created_dirs = _make_dirs(root, list(files) + [MANIFEST])
    # Manifest first: a crash part-way leaves files uninstall still knows about.
    dirs = (manifest["dirs"] if manifest else []) + report.created_dirs
    listing = {path: None if path in UNHASHED else _sha256(data) for path, data in files.items()}
    _write_atomic(root / MANIFEST, (json.dumps({"crmagi": version, "files": listing, "dirs": dirs},
                                               indent=1) + "\n").encode("utf-8"))
    for path, data in files.items():
        if path == CONFIG_FILE:
            _write_secret(root, path, data, report)
        else:
            _write_atomic(root / path, data)
        report.written.append(path)
    return report


def _write_secret(root: Path, path, data, report):
    """config.php holds the token secret: readable by the web server's group only.

    Owner and group are those of the SuiteCRM folder (the web server's, on a usual
    install).  Only root may give a file away; another user can still hand it to
    the folder's group if it belongs to it, and is warned when it does not."""
    folder = root.stat()
    want_uid = folder.st_uid if os.geteuid() == 0 else -1
    try:
        _write_atomic(root / path, data, mode=SECRET_MODE, owner=(want_uid, folder.st_gid))
    except PermissionError:
        _write_atomic(root / path, data, mode=SECRET_MODE)
        written = (root / path).stat()
        report.warnings.append(
            "%s: group %s, not %s like the SuiteCRM folder, and mode 0640: the web server may not read "
            "it; run `chgrp %s %s` as root" % (path, _group(written.st_gid), _group(folder.st_gid),
                                               _group(folder.st_gid), root / path))


def _known_dirs():
    """Every directory install may create: a manifest naming others was not written by us."""
    return {"/".join(Path(path).parts[:depth]) for path in TARGETS + (MANIFEST,)
            for depth in range(1, len(Path(path).parts))}


def uninstall(crm_root) -> UninstallReport:
    root = Path(crm_root)
    manifest = _read_manifest(root)
    if manifest is None:
        raise InstallError("%s: no crmagi install here (%s not found)" % (root, MANIFEST))
    report = UninstallReport(str(root))
    # Only paths this module can install are deleted, whatever a (web-writable) manifest says.
    for path, digest in manifest["files"].items():
        if path in TARGETS:
            _remove_file(root, path, digest, report)
    (root / MANIFEST).unlink()
    known = _known_dirs()
    for path in sorted(set(manifest["dirs"]) & known, key=lambda p: p.count("/"), reverse=True):
        _remove_dir(root, path, report)
    return report


def _remove_file(root: Path, path, digest, report):
    target = root / path
    if not target.is_file():
        report.missing.append(path)
        return
    modified = digest is not None and _sha256(target.read_bytes()) != digest
    target.unlink()
    (report.modified if modified else report.removed).append(path)


def _remove_dir(root: Path, path, report):
    target = root / path
    if not target.is_dir():
        return
    try:
        target.rmdir()
    except OSError:
        report.kept_dirs.append(path)
        return
    report.removed_dirs.append(path)
