"""Exact and MinHash near-duplicate removal across all sources, with datatrove's dedup stages.

Exact duplicates compare whitespace-normalised text; near duplicates use datatrove's MinHash
(5-gram shingles, 14 buckets x 8 hashes: pairs above ~0.75 Jaccard similarity are caught).
Shingles come from the script-aware Unicode word splitter (eojeols for Korean): near-dup
detection needs stable units, not morphemes, and this keeps Kiwi out of the dedup stages.
"""

# No `from __future__ import annotations`: datatrove reads the content getter's return type.

from datatrove.data import Document
from datatrove.pipeline.dedup import MinhashConfig
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
from datatrove.utils.hashing import HashConfig

from hcx.data.config import DedupConfig


def normalised_text(doc: Document) -> str:
    return " ".join(doc.text.split())


def exact_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=normalised_text, hash_config=HashConfig(precision=64))


def minhash_config(config: DedupConfig) -> MinhashConfig:
    return MinhashConfig(
        n_grams=config.n_grams,
        num_buckets=config.num_buckets,
        hashes_per_bucket=config.hashes_per_bucket,
        hash_config=HashConfig(precision=64),
    )
