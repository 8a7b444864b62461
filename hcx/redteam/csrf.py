"""Cross-site request forgery protection: a per-session token on every form, checked on every POST.

The token lives in the signed session cookie and in a hidden ``csrf_token`` field of each
form the app renders; a POST whose field does not match the cookie's token (compared in
constant time) is refused with 403. A forged cross-site form cannot read the token, and the
SameSite cookie is not even sent with most cross-site POSTs: two independent defences.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException

FIELD = "csrf_token"


def check_csrf(expected: str | None, submitted: object) -> None:
    """Bytes are compared, not strings: ``hmac.compare_digest`` refuses non-ASCII ``str`` with a TypeError."""
    if (
        not expected
        or not isinstance(submitted, str)
        or not hmac.compare_digest(expected.encode(), submitted.encode("utf-8", "surrogatepass"))
    ):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token: reload the page and retry")
