"""Writing and checking the Hugging Face files of a tokenizer directory.

``tokenizer.json`` holds the whole model; ``tokenizer_config.json`` (with the chat
template) and ``special_tokens_map.json`` let ``transformers.AutoTokenizer`` load it as a
``PreTrainedTokenizerFast`` with the hcx special tokens named.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from hcx.tokenizer.chat import CHAT_TEMPLATE
from hcx.tokenizer.specials import END_OF_TEXT, PAD, SPECIAL_TOKENS

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_MAP_FILE = "special_tokens_map.json"


def _dump(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_hf_files(directory: Path, tokenizer: Tokenizer, model_max_length: int) -> None:
    tokenizer.save(str(directory / TOKENIZER_FILE))
    others = [t for t in SPECIAL_TOKENS if t not in (END_OF_TEXT, PAD)]
    special_map = {"eos_token": END_OF_TEXT, "pad_token": PAD, "additional_special_tokens": others}
    added = {
        str(tokenizer.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        "added_tokens_decoder": added,
        "bos_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "chat_template": CHAT_TEMPLATE,
    }
    _dump(directory / CONFIG_FILE, config)
    _dump(directory / SPECIAL_MAP_FILE, special_map)
