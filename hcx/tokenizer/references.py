"""Other models' tokenizers, loaded offline from ``${data_dir}/tokenizers`` for Table 1.

Each loads with the library its authors use (see that folder's MANIFEST.md): tiktoken for
GPT-4 cl100k, GPT-2 and Llama 3; sentencepiece for Llama 2, Mistral v0.3 and KoGPT2;
``tokenizers`` for Polyglot-Ko and EXAONE 3.5. Only plain-text token counts are needed,
so no special tokens are added.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Pre-tokenizer patterns as published with each tokenizer (tiktoken_ext.openai_public; Meta's llama3).
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
R50K_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


@dataclass(frozen=True)
class TokenCounter:
    """A named tokenizer reduced to what Table 1 needs: tokens per document."""

    name: str
    vocab_size: int
    encode_batch: Callable[[Sequence[str]], list[list[int]]]

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encode_batch(texts)]


def _tiktoken(name: str, ranks_loader: Callable[[], dict[bytes, int]], pattern: str) -> TokenCounter:
    import tiktoken

    encoding = tiktoken.Encoding(
        name=name, pat_str=pattern, mergeable_ranks=ranks_loader(), special_tokens={}
    )
    return TokenCounter(
        name, encoding.n_vocab, lambda t: encoding.encode_ordinary_batch(list(t), num_threads=1)
    )


def _sentencepiece(name: str, model: Path) -> TokenCounter:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
    return TokenCounter(name, processor.get_piece_size(), lambda t: processor.encode(list(t)))


def _hf(name: str, tokenizer) -> TokenCounter:
    return TokenCounter(
        name,
        tokenizer.get_vocab_size(),
        lambda t: [e.ids for e in tokenizer.encode_batch(list(t), add_special_tokens=False)],
    )


def load_reference(name: str, reference_dir: str | Path) -> TokenCounter:
    """One reference tokenizer by its folder name in ``reference_dir``."""
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks, load_tiktoken_bpe
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    root = Path(reference_dir) / name
    if not root.is_dir():
        raise FileNotFoundError(f"reference tokenizer folder not found: {root}")
    if name == "gpt4-cl100k":
        return _tiktoken(name, lambda: load_tiktoken_bpe(str(root / "cl100k_base.tiktoken")), CL100K_PATTERN)
    if name == "llama3-128k":
        return _tiktoken(name, lambda: load_tiktoken_bpe(str(root / "tokenizer.model")), LLAMA3_PATTERN)
    if name == "gpt2-50k":
        return _tiktoken(
            name,
            lambda: data_gym_to_mergeable_bpe_ranks(str(root / "vocab.bpe"), str(root / "encoder.json")),
            R50K_PATTERN,
        )
    if name == "llama2-32k":
        return _sentencepiece(name, root / "tokenizer.model")
    if name == "mistral-v0.3-32k":
        return _sentencepiece(name, root / "tokenizer.model.v3")
    if name == "kogpt2-v1-50k":
        return _sentencepiece(name, next(root.glob("*.spiece")))
    if name == "polyglot-ko-30k":
        return _hf(name, Tokenizer.from_file(str(root / "tokenizer.json")))
    if name == "exaone3.5-102k":
        tokenizer = Tokenizer(models.BPE.from_file(str(root / "vocab.json"), str(root / "merges.txt")))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        return _hf(name, tokenizer)
    raise ValueError(f"unknown reference tokenizer {name!r}")


def hcx_counter(name: str, directory: str | Path) -> TokenCounter:
    from hcx.tokenizer.tokenizer import load

    tokenizer = load(directory)
    return TokenCounter(name, tokenizer.vocab_size, lambda t: tokenizer.encode_batch(t, num_threads=1))
