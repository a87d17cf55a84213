"""Credentials never reach a file, a log line or the console: every URL or message that is
recorded or printed goes through `redact_text` first."""

from __future__ import annotations

import re


def redact_url(url: str) -> str:
    """`scheme://user:***@host/...?k=***`: credentials in a URL never reach a file or a log."""
    return redact_text(url)


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s:]*)(:[^/@\s]*)?@")
# A user name alone may be a token (https://TOKEN@host), so it goes too.
_QUERY_SECRET = re.compile(
    r"(?i)([?&][^=&#\s]*(?:key|token|secret|password|auth)[^=&#\s]*=)[^&#\s]*"
)


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Every URL's password (and secret-looking query values) as ***, and any known secret."""
    out = _USERINFO.sub(
        lambda m: f"{m.group(1)}{m.group(2)}:***@" if m.group(3) else f"{m.group(1)}***@", text
    )
    out = _QUERY_SECRET.sub(r"\1***", out)
    for s in secrets:
        if s:
            out = out.replace(s, "***")
    return out
