"""What HTTP clients may see of the server's machine: no absolute paths, no credentials.

Error messages are written for operators at a terminal and name files by their full path;
the same text in an HTTP body would tell any caller how the server's disk is laid out.
``public_text`` rewrites paths under the project folder relative to it and replaces any
other absolute path by ``<server path>/<file name>``.

>>> public_text("Cannot open /srv/proj/.feature_layer/online.sqlite: disk full.", "/srv/proj")
'Cannot open .feature_layer/online.sqlite: disk full.'
>>> public_text("Missing /var/lib/x/manifest.json; see GET /v1/features or redis://h:6379/0.", "/srv/proj")
'Missing <server path>/manifest.json; see GET /v1/features or redis://h:6379/0.'
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from feature_layer.config import Settings

# An absolute POSIX path below a usual filesystem root (not an API route like /v1/features,
# not the path part of a URL: those follow ':' or '/' or a word character).
_ROOTS = ("tmp", "home", "root", "usr", "var", "opt", "srv", "work", "mnt", "media", "etc", "Users", "private",
          "run", "data", "lib", "nix", "snap", "proc", "dev", "sys", "app", "workspace", "builds", "code")
_ABSOLUTE = re.compile(r"(?<![\w:/.~-])/(?:" + "|".join(_ROOTS) + r")(?:/[^\s'\"`,;:()\[\]{}<>]*)?")
_WINDOWS = re.compile(r"(?<![\w])[A-Za-z]:\\[^\s'\"`,;:()\[\]{}<>]*")


def _relative_prefixes(project_dir: Any) -> list[str]:
    if project_dir is None:
        return []
    out = []
    for path in {str(project_dir), os.path.realpath(str(project_dir))}:
        out.append(path.rstrip("/") + "/")
    return sorted(out, key=len, reverse=True)


def _basename(match: re.Match[str]) -> str:
    name = re.split(r"[/\\]", match.group(0).rstrip("/\\."))[-1]
    trail = match.group(0)[len(match.group(0).rstrip(".")):]
    return f"<server path>/{name}{trail}" if name else "<server path>"


def public_text(text: str, project_dir: Any = None) -> str:
    """``text`` with absolute server paths made relative to the project or hidden."""
    for prefix in _relative_prefixes(project_dir):
        text = text.replace(prefix, "")
        text = text.replace(prefix.rstrip("/"), ".")
    text = _ABSOLUTE.sub(_basename, text)
    return _WINDOWS.sub(_basename, text)


def online_store_name(settings: Settings | None) -> str:
    """The online store as an operator knows it, from the settings alone (no IO, no credentials,
    no absolute path)."""
    online = getattr(settings, "online_store", None)
    if online is None:
        return "The online store"
    if getattr(online, "type", None) == "redis":
        url = getattr(online, "url", None) or "redis://127.0.0.1:6379/0"
        with contextlib.suppress(ValueError):
            parts = urlsplit(url)
            host = parts.hostname or parts.path or "?"
            port = f":{parts.port}" if parts.port else ""
            db = parts.path if parts.hostname and parts.path not in ("", "/") else ""
            return f"Redis at {parts.scheme}://{host}{port}{db}"  # never the user:password part
        return "Redis (online_store.url)"
    path = Path(str(getattr(online, "path", "?")))
    return f"The embedded SQLite online store at {public_text(str(path), getattr(settings, 'project_dir', None))}"
