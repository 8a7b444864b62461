"""lm-eval model backend ``hcx``: our checkpoints on our inference engine (SPEC §6).

Closed-ended tasks go through :meth:`hcx.infer.engine.Engine.score` (scoring requests on the
paged cache, logits only at continuation positions, shared prefixes computed once through the
automatic prefix cache), open-ended ones through :meth:`Engine.generate` (continuous
batching, stop strings). Registered with lm-eval as
``hcx`` when this module is imported, which :mod:`hcx.eval` and ``python -m hcx.eval`` do.

Context/continuation split (lm-eval issues #1053, #1297): lm-eval's :class:`TemplateLM`
encodes ``context + continuation`` whole and takes the continuation tokens from where the
encoded context ends, after moving the context's trailing spaces into the continuation.
We inherit exactly that, so on the same tokenizer both backends score the same token
sequences; a BPE merge across the boundary then belongs to the continuation, as in ``hf``.

Window: ``hf`` keeps the last ``max_length + 1`` tokens of a pair and feeds the first
``max_length`` to the model; the engine feeds the whole pair, so a model with context
``L`` scores pairs of at most ``L`` tokens and our ``max_length`` is ``L - 1``. With the
same ``max_length`` both backends see identical windows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams
from hcx.model.transformer import Transformer
from hcx.tokenizer import Tokenizer, load

Pair = tuple[tuple[str, str], list[int], list[int]]
SCORE_CHUNK = 512
"""Pairs handed to the engine at once (a progress-bar tick; cached prefixes outlive a chunk)."""
log = logging.getLogger(__name__)


def _device(requested: str | None) -> torch.device:
    """The requested device; lm-eval's CLI asks for ``cuda`` by default, so a CPU box falls back."""
    if requested is None or (requested.startswith("cuda") and not torch.cuda.is_available()):
        if requested is not None:
            log.warning("device %s requested but CUDA is not available; using the CPU", requested)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@register_model("hcx")
class HcxLM(TemplateLM):
    """An hcx :class:`Transformer` + its :class:`Tokenizer` (hcx's or its own) behind lm-eval's model interface.

    ``lm_eval --model hcx --model_args pretrained=DIR`` loads an HF-format export; in Python
    pass ``model=`` and ``tokenizer=`` (a :class:`Tokenizer` or its directory) instead.
    The engine computes up to ``score_batch_tokens`` tokens a step when scoring; ``batch_size``
    is only how many generation requests (at least 64) are handed to it at once, so lm-eval's
    CLI default of 1 does not serialise the work.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        model: Transformer | None = None,
        tokenizer: Tokenizer | str | Path | None = None,
        batch_size: int | str = 64,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        score_batch_tokens: int = 8192,
        device: str | None = None,
        dtype: str = "auto",
        **_: Any,
    ) -> None:
        super().__init__()
        if (pretrained is None) == (model is None):
            raise ValueError("give exactly one of pretrained= (a checkpoint directory) or model=")
        if pretrained is not None:
            from hcx.model.load import load_model

            loaded = load_model(pretrained, _device(device), dtype)
            model, tokenizer = loaded.model, tokenizer or loaded.tokenizer_dir
        elif device is not None:
            model = model.to(_device(device))
        if tokenizer is None:
            raise ValueError("an in-memory model needs tokenizer= (a Tokenizer or its directory)")
        self.tokenizer_hcx = load(tokenizer) if isinstance(tokenizer, str | Path) else tokenizer
        assert model is not None
        self.model = model.eval()
        context = model.cfg.max_seq_len
        self._max_length = min(max_length or context - 1, context - 1)
        self._max_gen_toks = int(max_gen_toks)
        self.batch_size = max(int(batch_size), 64) if str(batch_size).isdigit() else 64
        self.engine = Engine(
            model,
            self.tokenizer_hcx,
            EngineConfig(
                score_batch_tokens=int(score_batch_tokens),
                num_blocks=max(1024, 4 * -(-max(context, int(score_batch_tokens)) // 16)),
                max_running=max(self.batch_size, 1),
                max_step_tokens=int(score_batch_tokens),
            ),
        )

    @property
    def prefix_cache_counts(self) -> tuple[int, int]:
        """Tokens whose keys and values came from the prefix cache, and all tokens the engine admitted."""
        return self.engine.scheduler.num_prefix_hits, self.engine.scheduler.num_prefix_queried

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer_hcx.eot_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context starts from: the document start (BOS), as lm-eval's hf backend uses."""
        return self.tokenizer_hcx.bos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """As lm-eval's hf backend encodes: with the BOS first where the model's own tokenizer puts one
        (Llama, Mistral; hcx's puts none), unless asked not to or the text already starts with it."""
        tokenizer = self.tokenizer_hcx
        ids = tokenizer.encode(string)
        bos = tokenizer.decode([tokenizer.bos_id])
        if tokenizer.adds_bos and add_special_tokens is not False and not string.startswith(bos):
            return [tokenizer.bos_id, *ids]
        return ids

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer_hcx.decode(tokens)

    def _window(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        """The last ``max_length + 1`` tokens of the pair, split where the continuation starts."""
        whole = (context + continuation)[-(self.max_length + 1) :]
        n = min(len(continuation), len(whole) - 1)
        return whole[:-n], whole[-n:]

    def _loglikelihood_tokens(
        self, requests: list[Pair], disable_tqdm: bool = False, **_: Any
    ) -> list[tuple[float, bool]]:
        """Scores of (context, continuation) token pairs, in request order.

        Pairs with the same (windowed) context go to the engine together, longest contexts first:
        the first computes the context, the others find it in the prefix cache (the A/B/C/D of
        KMMLU, MMLU, CLIcK read the same context; ARC's longer choices run only their own tokens
        and the context's last partial cache block), as do later items with the same few shots.
        """
        windows = [self._window(context, continuation) for _, context, continuation in requests]
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        with tqdm(total=len(requests), desc="hcx loglikelihood", disable=disable_tqdm) as bar:
            self._score_each(windows, self._by_context(windows), results, bar)
        for request, result in zip(requests, results, strict=True):
            if request[0] is not None:
                self.cache_hook.add_partial("loglikelihood", request[0], result)
        return results  # type: ignore[return-value]

    @staticmethod
    def _by_context(windows: list[tuple[list[int], list[int]]]) -> list[int]:
        """Indices of ``windows``, those with the same context together, longest contexts first."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (context, _) in enumerate(windows):
            groups.setdefault(tuple(context), []).append(i)
        return [i for key in sorted(groups, key=len, reverse=True) for i in groups[key]]

    def _score_each(
        self, windows: list[tuple[list[int], list[int]]], indices: list[int], results: list, bar: tqdm
    ) -> None:
        """``results[i]`` for each of ``indices``: its window scored by :meth:`Engine.score`, in that order."""
        for start in range(0, len(indices), SCORE_CHUNK):
            chunk = indices[start : start + SCORE_CHUNK]
            scores = self.engine.score([windows[i][0] for i in chunk], [windows[i][1] for i in chunk])
            for i, score in zip(chunk, scores, strict=True):
                results[i] = (score.total, score.greedy)
            bar.update(len(chunk))

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Perplexity-style scores: disjoint windows of ``max_length`` predicted tokens, as ``hf``.

        The windows share no context worth reusing (each starts after the prefix token or its own
        document's text), so they go to :meth:`Engine.score` as they are."""
        windows: list[tuple[list[int], list[int]]] = []
        owners: list[int] = []
        for index, (string,) in enumerate(req.args for req in requests):
            for context, predicted in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((context, predicted))
                owners.append(index)
        results: list[tuple[float, bool] | None] = [None] * len(windows)
        with tqdm(total=len(windows), desc="hcx loglikelihood_rolling", disable=disable_tqdm) as bar:
            self._score_each(
                windows, sorted(range(len(windows)), key=lambda i: -len(windows[i][0])), results, bar
            )
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, results, strict=True):  # type: ignore[misc]
            totals[owner] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, per task) generation on the engine, cut at the task's stop strings."""
        eos = self.tok_decode([self.eot_token_id])
        prompts, params = [], []
        for context, gen_kwargs in (req.args for req in requests):
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            # A task may ask for more new tokens than a small model's context holds (HumanEval asks
            # 512): it gets half the context, and the prompt keeps its last tokens in the other half.
            max_new = min(int(kwargs.pop("max_gen_toks")), self.model.cfg.max_seq_len // 2)
            sampled = kwargs.get("do_sample", False) and float(kwargs.get("temperature", 0.0) or 0.0) > 0
            ids = self.tok_encode(context)[-max(self.model.cfg.max_seq_len - max_new, 1) :] or [
                self.prefix_token_id
            ]
            prompts.append(ids)
            params.append(
                SamplingParams(
                    max_new_tokens=max_new,
                    temperature=float(kwargs.get("temperature", 1.0)) if sampled else 0.0,
                    top_p=float(kwargs.get("top_p") or 1.0) if sampled else 1.0,
                    top_k=int(kwargs.get("top_k") or 0) if sampled else 0,
                    stop=[s for s in until if s],
                )
            )
        outputs: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            completions = self.engine.generate(
                prompts[start:end], params[start:end], progress=not disable_tqdm
            )
            for request, completion in zip(requests[start:end], completions, strict=True):
                outputs.append(completion.text)
                self.cache_hook.add_partial("generate_until", request.args, completion.text)
        return outputs

    def get_model_info(self) -> dict[str, Any]:
        cfg = self.model.cfg
        return {
            "hcx_dim": cfg.dim,
            "hcx_layers": cfg.n_layers,
            "hcx_vocab": cfg.vocab_size,
            "max_length": self.max_length,
        }
