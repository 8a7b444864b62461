"""The chat settings a Hugging Face tokenizer directory declares, and writing them back.

``tokenizer_config.json`` holds the template (``chat_template``; a list of named templates
means its ``default``; newer ``transformers`` saves ``chat_template.jinja`` beside it) and the
``eos_token``/``bos_token``/``pad_token``. The end-of-turn token has no standard key: hcx keeps
it as ``end_of_turn_token``, which ``transformers`` carries along unread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hcx.records import read_json_file
from hcx.tokenizer.config import ChatTokens
from hcx.tokenizer.hf_files import CONFIG_FILE

TEMPLATE_FILE = "chat_template.jinja"
CONFIG_KEYS = {
    "template": "chat_template",
    "end_of_turn": "end_of_turn_token",
    "eos": "eos_token",
    "bos": "bos_token",
    "pad": "pad_token",
}


def _token_string(value: Any) -> str | None:
    """A token as configs write it: a string, or an ``AddedToken`` dict with its ``content``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _template(config: dict[str, Any], directory: Path) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str) and template:
        return template
    jinja = directory / TEMPLATE_FILE
    return jinja.read_text(encoding="utf-8") if jinja.is_file() else None


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        return {}
    config = read_json_file(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return config


def read_chat_tokens(directory: Path, config: dict[str, Any] | None = None) -> ChatTokens:
    """What ``directory`` declares (``None`` where it says nothing)."""
    config = read_config(directory) if config is None else config
    values = {
        field: _token_string(config.get(key)) for field, key in CONFIG_KEYS.items() if field != "template"
    }
    return ChatTokens(template=_template(config, directory), **values)


def with_overrides(declared: ChatTokens, overrides: ChatTokens | None) -> ChatTokens:
    if overrides is None:
        return declared
    return declared.model_copy(update=overrides.model_dump(exclude_none=True))


def save_chat_tokens(directory: str | Path, chat: ChatTokens) -> Path:
    """Write the set fields of ``chat`` into ``directory``'s ``tokenizer_config.json`` (kept otherwise)."""
    directory = Path(directory)
    config = read_config(directory)
    for field, value in chat.model_dump(exclude_none=True).items():
        config[CONFIG_KEYS[field]] = value
    path = directory / CONFIG_FILE
    path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path
