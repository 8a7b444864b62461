"""The tokenizer stage: train hcx's own tokenizer, or extend a base model's when the recipe has ``extend:``."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from hcx.tokenizer.config import TokenizerConfig


def build_tokenizer(config: TokenizerConfig) -> Path:
    """Write the recipe's tokenizer to ``config.output_dir`` and return that directory."""
    if config.extend is None:
        from hcx.tokenizer.train import train_from_config

        return train_from_config(config)
    from hcx.tokenizer.extend import extend_from_config, print_extension

    extension, table = extend_from_config(config)
    print_extension(extension, table, Console(stderr=True))
    return Path(config.output_dir)
