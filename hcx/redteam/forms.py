"""Reading the app's HTML forms: every field is untrusted, bounded and checked before use.

Errors are :class:`fastapi.HTTPException` with a message that names the field, rendered
by the app as an HTML error page: 413 for text over its size cap, 422 for anything else.
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.datastructures import FormData

from hcx.redteam.csrf import FIELD, check_csrf

MAX_FIELDS = 200


async def read_form(request: Request) -> FormData:
    """The submitted form, after the CSRF check (403 when the token is missing or wrong)."""
    form = await request.form(
        max_files=0, max_fields=MAX_FIELDS, max_part_size=request.app.state.cfg.max_body_bytes
    )
    check_csrf(request.state.sign_in.csrf, form.get(FIELD))
    return form


def text_field(form: FormData, name: str, max_chars: int, label: str, required: bool = True) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise HTTPException(422, f"{label}: expected text")
    value = value.replace("\r\n", "\n").strip()
    if len(value) > max_chars:
        raise HTTPException(413, f"{label} is {len(value)} characters; at most {max_chars} are accepted")
    if required and not value:
        raise HTTPException(422, f"{label} is empty")
    return value


def choice_field(form: FormData, name: str, choices: list[str], label: str) -> str:
    value = form.get(name)
    if value not in choices:
        raise HTTPException(422, f"{label}: choose one of {', '.join(choices)}")
    return str(value)


def score_field(form: FormData, name: str, low: int, high: int, label: str) -> int:
    value = form.get(name)
    if not isinstance(value, str) or not value.isdigit() or not low <= int(value) <= high:
        raise HTTPException(422, f"{label}: a score from {low} to {high} is required")
    return int(value)


def labelled_choice(form: FormData, name: str, choices: list[str], max_chars: int, label: str) -> str:
    """A topic or method: one of the listed ones, or ``other`` with the annotator's own words."""
    value = choice_field(form, name, choices, label)
    if value != "other":
        return value
    own = text_field(form, f"{name}_other", max_chars, f"{label} (other)")
    return f"other: {own}"
