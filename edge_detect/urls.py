"""URL helpers shared by sources, sinks and the CLI: masking credentials for logs, messages and ``repr``."""
from __future__ import annotations

import os
import re
from typing import Union

__all__ = ["mask_credentials"]

# userinfo = everything between "scheme://" and the LAST "@" of the authority (the authority ends at the first
# "/", "?", "#" or whitespace): a password with an unencoded "@" is masked whole
_CRED_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/?#\s]*@")
_SECRET_QUERY_RE = re.compile(r"([?&;](?:password|passwd|pass|pwd|token|key|secret|auth)=)[^&;\s]*", re.I)


def mask_credentials(uri: Union[str, os.PathLike]) -> str:
    """``uri`` with any ``user:password@`` userinfo and secret query values replaced by ``***``.

    Works inside longer strings too (GStreamer pipelines with ``location=rtsp://user:pw@host``).

    >>> mask_credentials("rtsp://admin:hunter2@10.0.0.5:554/stream?token=abc&x=1")
    'rtsp://***@10.0.0.5:554/stream?token=***&x=1'
    >>> mask_credentials("http://admin:Pa@ss@10.0.0.5/v.mjpg")
    'http://***@10.0.0.5/v.mjpg'
    """
    s = str(uri)
    s = _CRED_RE.sub(r"\1***@", s)
    return _SECRET_QUERY_RE.sub(r"\1***", s)
