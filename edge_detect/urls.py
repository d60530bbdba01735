"""URL helpers shared by sources, sinks, backends, the server and the CLI: credential masking, scheme/host
parsing, loopback addresses.

Nothing here opens a connection; these are pure string functions. A URL is ``scheme://[userinfo@]host[:port]
[/path][?query][#fragment]``; the userinfo is everything between ``scheme://`` and the authority's LAST ``@``
(the authority ends at the first ``/``, ``?``, ``#`` or whitespace), so a password holding an unencoded ``@`` is
still treated as a whole.
"""
from __future__ import annotations

import ipaddress
import os
import re
from typing import Optional, Union

__all__ = ["mask_credentials", "url_scheme", "url_host", "is_loopback", "SCHEME_RE"]

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}

#: ``scheme://`` at the start of a string (RFC 3986 scheme characters); group 1 is the scheme as written.
SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")

# userinfo = everything between "scheme://" and the LAST "@" of the authority: a password with "@" is masked whole
_CRED_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/?#\s]*@")
_SECRET_QUERY_RE = re.compile(r"([?&;](?:password|passwd|pass|pwd|token|key|secret|auth)=)[^&;\s]*", re.I)


def mask_credentials(uri: Union[str, "os.PathLike[str]"]) -> str:
    """``uri`` with any ``user:password@`` userinfo and secret query values replaced by ``***``.

    Works inside longer strings too (GStreamer pipelines with ``location=rtsp://user:pw@host``, error messages).

    >>> mask_credentials("rtsp://admin:hunter2@10.0.0.5:554/stream?token=abc&x=1")
    'rtsp://***@10.0.0.5:554/stream?token=***&x=1'
    >>> mask_credentials("http://admin:Pa@ss@10.0.0.5/v.mjpg")
    'http://***@10.0.0.5/v.mjpg'
    """
    s = str(uri)
    s = _CRED_RE.sub(r"\1***@", s)
    return _SECRET_QUERY_RE.sub(r"\1***", s)


def url_scheme(text: Union[str, int, "os.PathLike[str]"]) -> Optional[str]:
    """The lower-case scheme of ``text`` when it starts with ``scheme://``, else ``None`` (paths, indices).

    >>> url_scheme("RTSP://cam/1"), url_scheme("video.mp4"), url_scheme(0)
    ('rtsp', None, None)
    """
    if isinstance(text, int):
        return None
    m = SCHEME_RE.match(str(text).strip())
    return m.group(1).lower() if m else None


def url_host(url: str) -> str:
    """``host`` or ``host:port`` of ``url``: the authority without any userinfo (never a part of a password).

    >>> url_host("http://admin:Pa@ss@10.0.0.5:8080/v.mjpg?x=1")
    '10.0.0.5:8080'
    """
    authority = re.split(r"[/?#\s]", re.sub(r"^[^:]+://", "", str(url).strip()), maxsplit=1)[0]
    return authority.rsplit("@", 1)[-1]


def is_loopback(host: str) -> bool:
    """``True`` for ``localhost`` and loopback IPs (``127.0.0.0/8``, ``::1``, in brackets or not); ``False`` for
    ``0.0.0.0``, ``::`` and every other name or address.

    >>> is_loopback("127.0.0.1"), is_loopback("[::1]"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    name = str(host).strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
