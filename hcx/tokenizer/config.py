"""The ``tokenizer:`` section of a recipe, with the SPEC §2 numbers as defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from hcx.config import Section
from hcx.data.held_out import HELD_OUT_FRACTION

REFERENCE_NAMES = (
    "gpt4-cl100k",
    "llama3-128k",
    "llama2-32k",
    "mistral-v0.3-32k",
    "polyglot-ko-30k",
    "exaone3.5-102k",
    "kogpt2-v1-50k",
    "gpt2-50k",
)


class ChatTokens(Section):
    """Chat settings of a Hugging Face tokenizer where its ``tokenizer_config.json`` lacks or gets them wrong.

    Each is a token string of the tokenizer (the template is Jinja, as ``transformers`` renders it);
    ``None`` keeps what the directory says. Stages that export a model write the settings in
    effect into the export's ``tokenizer_config.json``, so later stages find them there.
    """

    template: str | None = Field(None, description="Jinja chat template (transformers' chat_template).")
    end_of_turn: str | None = Field(
        None, description="Token closing an assistant turn; default: the one the template puts there."
    )
    eos: str | None = Field(None, description="End of text; default: the config's eos_token.")
    bos: str | None = Field(None, description="Start of a document; default: the config's bos_token or eos.")
    pad: str | None = Field(None, description="Padding; default: the config's pad_token, else eos.")


class StatsConfig(Section):
    """What ``hcx tokenizer stats`` measures: held-out documents of each language (Table 1)."""

    documents: dict[str, str] = Field(
        default_factory=lambda: {
            "Korean": "${data_dir}/pretrain/ko.jsonl.gz",
            "English": "${data_dir}/pretrain/en.jsonl.gz",
            "Japanese": "${data_dir}/pretrain/ja.jsonl.gz",
            "code": "${data_dir}/pretrain/code.jsonl.gz",
        }
    )
    docs_per_language: int = Field(1000, ge=1)
    references: list[str] = Field(default_factory=lambda: list(REFERENCE_NAMES))
    reference_dir: str = "${data_dir}/tokenizers"
    extra_tokenizers: dict[str, str] = Field(
        default_factory=dict, description="More hcx tokenizer directories to compare, by display name."
    )

    @field_validator("references")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(REFERENCE_NAMES))
        if unknown:
            raise ValueError(f"unknown reference tokenizers {unknown}; known: {list(REFERENCE_NAMES)}")
        return names


class ExtendConfig(Section):
    """``hcx tokenizer extend``: append one language's tokens to an existing model's tokenizer.

    EEVE-Korean (arXiv 2402.14714) grew SOLAR's 32,000 tokens to 40,960; 8,192 new tokens take
    Mistral v0.3's 32,768 to the same 40,960. The training documents are those the ``tokenizer``
    section does not hold out, so ``hcx tokenizer stats`` and this command's table measure unseen text.
    """

    base: str = Field(
        "${data_dir}/tokenizers/mistral-v0.3-32k",
        description="The base model's tokenizer directory (with tokenizer.json) or its tokenizer.json.",
    )
    inputs: list[str] = Field(
        default_factory=lambda: ["${data_dir}/pretrain/ko.jsonl.gz"],
        description="JSON Lines files or globs of text in the new language.",
    )
    language: Literal["ko"] = Field("ko", description="Korean: Hangul characters, Kiwi morpheme boundaries.")
    new_tokens: int = Field(8192, ge=1, description="Tokens to add, single characters included.")
    max_docs_per_file: int | None = Field(None, ge=1)
    max_bytes_per_file: int | None = Field(None, ge=1)


class TokenizerConfig(Section):
    """Training a morphology-aware byte-level BPE (SPEC §2: vocabulary 100,000)."""

    inputs: list[str] = Field(
        default_factory=lambda: ["${data_dir}/pretrain/*.jsonl.gz"],
        description="JSON Lines files or globs (optionally .gz); one document per line.",
    )
    text_field: str = "text"
    output_dir: str = "runs/tokenizer"
    vocab_size: int = Field(100_000, description="Including the byte alphabet and the special tokens.")
    morpheme_aware: bool = True
    join_grammatical: bool = Field(
        False,
        description="Let consecutive grammatical morphemes (particles, endings) merge; stems stay apart.",
    )
    min_frequency: int = Field(2, ge=1)
    held_out_fraction: float = Field(
        HELD_OUT_FRACTION,
        ge=0.0,
        lt=1.0,
        description="Share of documents (by text hash) never trained on; stats use them.",
    )
    max_docs_per_file: int | None = Field(None, ge=1)
    max_bytes_per_file: int | None = Field(None, ge=1)
    file_weights: dict[str, float] = Field(
        # Korean first (SPEC §2): more of the vocabulary for Korean morphemes, less for the long
        # Chinese/Japanese runs the regex leaves unsplit. Measured in benchmarks/tokenizer.py.
        default_factory=lambda: {"ko.jsonl.gz": 3.0, "ja.jsonl.gz": 0.5, "zh.jsonl.gz": 0.5},
        description="Multiplier of word counts per input file name; names not listed count once.",
    )
    model_max_length: int = Field(32_768, description="SPEC §4: the longest context pretraining uses.")
    num_workers: int = Field(0, ge=0, description="Kiwi threads; 0 uses every core.")
    cache_dir: str = Field(
        "runs/cache/tokenizer", description="Word counts and Kiwi analyses kept for re-runs; '' disables."
    )
    stats: StatsConfig = Field(default_factory=StatsConfig)
    extend: ExtendConfig | None = Field(
        None, description="Set: the stage extends this base model's tokenizer instead of training one."
    )
