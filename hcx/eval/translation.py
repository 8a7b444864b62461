"""Corpus-level translation metrics for FLORES+ (SPEC §6 "Multilingual": chrF, BLEU, xCOMET).

chrF and BLEU come from sacrebleu on its usual 0–100 scale. BLEU's tokenizer suits the
target script without downloads: ``13a`` for English and space-delimited Korean, ``char`` for
Japanese (``ja-mecab`` needs MeCab), ``zh`` for Chinese. xCOMET (the report's metric) runs
only when ``unbabel-comet`` is installed and an xCOMET checkpoint is on this machine
(``HCX_XCOMET_MODEL`` or ``Unbabel/XCOMET-XL`` in the Hugging Face cache; nothing is
downloaded); :func:`xcomet_status` says which, for the report.

Per-segment items are ``(reference, hypothesis, bleu_tokenizer)`` for chrF/BLEU and
``(source, hypothesis, reference)`` for xCOMET.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Sequence

import sacrebleu

log = logging.getLogger(__name__)

BLEU_TOKENIZERS = {"eng_Latn": "13a", "kor_Hang": "13a", "jpn_Jpan": "char", "zho_Hans": "zh"}
XCOMET_MODEL = "Unbabel/XCOMET-XL"


def corpus_chrf(items: Sequence[tuple[str, str, str]]) -> float:
    references, hypotheses, _ = zip(*items, strict=True)
    return sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score


def corpus_bleu(items: Sequence[tuple[str, str, str]]) -> float:
    references, hypotheses, tokenizers = zip(*items, strict=True)
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenizers[0]).score


@functools.cache
def _xcomet_checkpoint() -> str | None:
    configured = os.environ.get("HCX_XCOMET_MODEL")
    if configured:
        return configured if os.path.exists(configured) else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(XCOMET_MODEL, "checkpoints/model.ckpt")
    return found if isinstance(found, str) else None


@functools.cache
def xcomet_status() -> str:
    """``available``, or ``unavailable (why)``: what the report prints next to the FLORES rows."""
    if importlib.util.find_spec("comet") is None:
        status = "unavailable (unbabel-comet is not installed)"
    elif _xcomet_checkpoint() is None:
        status = f"unavailable (no local {XCOMET_MODEL} checkpoint; set HCX_XCOMET_MODEL)"
    else:
        status = "available"
    log.warning("xcomet: %s", status)
    return status


def corpus_xcomet(items: Sequence[tuple[str, str, str]]) -> float:
    """System-level xCOMET (0–1); only reached when :func:`xcomet_status` is ``available``."""
    from comet import load_from_checkpoint

    model = load_from_checkpoint(_xcomet_checkpoint())
    data = [{"src": s, "mt": m, "ref": r} for s, m, r in items]
    return float(model.predict(data, batch_size=8, gpus=0, progress_bar=False).system_score)
