"""Reading the app's HTML forms: every field is untrusted, bounded and checked before use.

Errors are :class:`fastapi.HTTPException` with a message that names the field, rendered
by the app as an HTML error page: 413 for text over its size cap, 422 for anything else.
"""

from __future__ import annotations

import codecs
import re

from fastapi import HTTPException, Request

try:
    from python_multipart.multipart import parse_options_header
except ImportError:  # python-multipart before 0.0.13
    from multipart.multipart import parse_options_header  # type: ignore[no-redef]
from starlette.datastructures import FormData

from hcx.redteam.csrf import FIELD, check_csrf

MAX_FIELDS = 200
# ASCII digits only: str.isdigit() accepts "²" or "١", which int() then rejects or reads as another number.
SCORE = re.compile(r"[0-9]{1,6}")


async def read_form(request: Request) -> FormData:
    """The submitted form, after the CSRF check (403 when the token is missing or wrong)."""
    refuse_odd_charset(request.headers.get("content-type", ""))
    form = await request.form(
        max_files=0, max_fields=MAX_FIELDS, max_part_size=request.app.state.cfg.max_body_bytes
    )
    check_csrf(request.state.sign_in.csrf, form.get(FIELD))
    return form


def refuse_odd_charset(content_type: str) -> None:
    """A multipart body is decoded with the charset its Content-Type names; only UTF-8 is accepted, since
    Starlette lets other codecs fail with a bare UnicodeError (punycode) or make lone surrogates (utf-7),
    and a charset name with a NUL in it raises ValueError from ``codecs.lookup``."""
    kind, params = parse_options_header(content_type)
    if kind == b"multipart/form-data" and codec(params.get(b"charset", b"utf-8")) != "utf-8":
        raise HTTPException(415, "a multipart form must be UTF-8")


def codec(charset: bytes) -> str | None:
    try:
        return codecs.lookup(charset.decode("latin-1")).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None


def text_field(form: FormData, name: str, max_chars: int, label: str, required: bool = True) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise HTTPException(422, f"{label}: expected text")
    if not storable(value):
        raise HTTPException(422, f"{label}: NUL characters and unpaired surrogates are not accepted")
    value = value.replace("\r\n", "\n").strip()
    if len(value) > max_chars:
        raise HTTPException(413, f"{label} is {len(value)} characters; at most {max_chars} are accepted")
    if required and not value:
        raise HTTPException(422, f"{label} is empty")
    return value


def storable(value: str) -> bool:
    """Text every backend can store: PostgreSQL refuses NUL, and neither driver encodes a lone surrogate
    (which a multipart part declaring ``charset=unicode_escape`` can produce)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def choice_field(form: FormData, name: str, choices: list[str], label: str) -> str:
    value = form.get(name)
    if value not in choices:
        raise HTTPException(422, f"{label}: choose one of {', '.join(choices)}")
    return str(value)


def score_field(form: FormData, name: str, low: int, high: int, label: str) -> int:
    value = form.get(name)
    if not isinstance(value, str) or not SCORE.fullmatch(value) or not low <= int(value) <= high:
        raise HTTPException(422, f"{label}: a score from {low} to {high} is required")
    return int(value)


def labelled_choice(form: FormData, name: str, choices: list[str], max_chars: int, label: str) -> str:
    """A topic or method: one of the listed ones, or ``other`` with the annotator's own words."""
    value = choice_field(form, name, choices, label)
    if value != "other":
        return value
    own = text_field(form, f"{name}_other", max_chars, f"{label} (other)")
    return f"other: {own}"
