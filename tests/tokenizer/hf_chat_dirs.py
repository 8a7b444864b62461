"""Hugging Face tokenizer directories for the tests: real tokenizer files with chat templates written here.

- Mistral v0.3 (Metaspace BPE with byte fallback) with a ``[INST] ... [/INST]`` template in the style of
  Mistral's own: BOS as text, the system prompt in the first user turn, ``" " + reply + eos``.
- Polyglot-Ko (byte-level BPE) with ChatML, whose ``<|im_start|>``/``<|im_end|>`` are added as special
  tokens, as a fine-tune that brings the ChatML format to a base tokenizer does.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from tokenizers import Tokenizer

MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set turns = messages -%}{%- endif -%}"
    "{{- bos_token -}}"
    "{%- for message in turns -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('roles must alternate user/assistant after an optional system message') -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' and loop.first and system is defined -%}"
    "{{- '[INST] ' + system + '\\n\\n' + message['content'] + '[/INST]' -}}"
    "{%- elif message['role'] == 'user' -%}{{- '[INST] ' + message['content'] + '[/INST]' -}}"
    "{%- else -%}{{- ' ' + message['content'] + eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def write_config(directory: Path, **config: object) -> Path:
    path = directory / "tokenizer_config.json"
    path.write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", **config}, ensure_ascii=False))
    return directory


def mistral_dir(data_dir: Path, out: Path, template: str | None = MISTRAL_TEMPLATE) -> Path:
    """Mistral's tokenizer.json with a tokenizer_config.json naming ``<s>``/``</s>`` (and the template)."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(data_dir / "tokenizers" / "mistral-v0.3-32k" / "tokenizer.json", out / "tokenizer.json")
    extra = {"chat_template": template} if template else {}
    return write_config(out, bos_token="<s>", eos_token="</s>", **extra)


def chatml_polyglot_dir(data_dir: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer.from_file(str(data_dir / "tokenizers" / "polyglot-ko-30k" / "tokenizer.json"))
    tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tokenizer.save(str(out / "tokenizer.json"))
    return write_config(out, eos_token="<|endoftext|>", chat_template=CHATML_TEMPLATE)


def conversations(data_dir: Path, name: str, every: int = 1, limit: int | None = None) -> list[list[dict]]:
    """The ``messages`` of every ``every``-th row of ``sft/<name>.jsonl.gz``."""
    with gzip.open(data_dir / "sft" / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line)["messages"] for i, line in enumerate(f) if i % every == 0]
    return rows[:limit]
