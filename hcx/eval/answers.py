"""What the models say: greedy answers to held-out chat prompts, side by side, with measured rates.

Benchmark scores of a small model sit at chance; its answers still show whether SFT and PPO
taught it to chat. The prompts are the first user turns of the conversations SFT held out
(``held_out_prompts.jsonl``, written by the SFT stage as chat-template token ids), so no model
trained on them. Over all of them, per model:

- ``in_language``: the answer is in the prompt's language (Korean: at least half of its
  letters are Hangul; English: fewer than half are, and it has letters);
- ``ended``: the answer ended with the end-of-turn token (not cut at ``max_new_tokens``);
- ``non_empty``: it has visible text;
- ``repeated_4grams``: the share of its token 4-grams that repeat an earlier 4-gram of the same
  answer (looping), averaged over answers;
- ``mean_tokens``: mean answer length in tokens;
- ``distinct``: distinct answers ÷ prompts (a model that says the same thing to everyone scores low).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from itertools import chain, zip_longest
from pathlib import Path
from statistics import fmean

from pydantic import Field

from hcx.config import Section

RATES = ("in_language", "ended", "non_empty", "repeated_4grams", "mean_tokens", "distinct")


class AnswersConfig(Section):
    """``eval.answers``: which prompts the checkpoints answer and how many are shown."""

    prompts: str = Field(description="held_out_prompts.jsonl of the SFT stage (language, prompt_ids)")
    count: int = Field(default=200, ge=1, description="prompts answered, languages interleaved")
    samples: int = Field(default=3, ge=0, description="prompts per language shown with every model's answer")
    max_new_tokens: int = Field(default=64, ge=1)


@dataclass(frozen=True)
class Answer:
    language: str
    prompt: str
    text: str
    token_ids: list[int]
    ended: bool


@dataclass(frozen=True)
class HeldOutPrompt:
    language: str
    ids: list[int]


def read_held_out_prompts(path: str | Path, count: int) -> list[HeldOutPrompt]:
    """The first ``count`` prompts, taking the languages in turn so each is represented."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no held-out prompts (the SFT stage writes them)")
    by_language: dict[str, list[HeldOutPrompt]] = {}
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                prompt = HeldOutPrompt(str(row["language"]), [int(t) for t in row["prompt_ids"]])
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{path}:{line_no}: not a {{language, prompt_ids}} record") from None
            by_language.setdefault(prompt.language, []).append(prompt)
    interleaved = chain.from_iterable(zip_longest(*by_language.values()))
    return [p for p in interleaved if p is not None][:count]


def hangul_share(text: str) -> float | None:
    """Hangul letters ÷ (Hangul + Latin letters); None when the text has neither."""
    hangul = sum("가" <= c <= "힣" or "ㄱ" <= c <= "ㅣ" for c in text)
    latin = sum(c.isascii() and c.isalpha() for c in text)
    return hangul / (hangul + latin) if hangul + latin else None


def in_language(text: str, language: str) -> bool:
    share = hangul_share(text)
    if share is None:
        return False
    return share >= 0.5 if language == "ko" else share < 0.5


def repeated_ngram_rate(token_ids: list[int], n: int = 4) -> float:
    """Share of the token n-grams that already occurred earlier in the same sequence."""
    grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def answer_rates(answers: list[Answer]) -> dict[str, float]:
    if not answers:
        raise ValueError("no answers to measure")
    return {
        "in_language": fmean(in_language(a.text, a.language) for a in answers),
        "ended": fmean(a.ended for a in answers),
        "non_empty": fmean(bool(a.text.strip()) for a in answers),
        "repeated_4grams": fmean(repeated_ngram_rate(a.token_ids) for a in answers),
        "mean_tokens": fmean(len(a.token_ids) for a in answers),
        "distinct": len({a.text.strip() for a in answers}) / len(answers),
    }


def generate_answers(
    checkpoint: str | Path, prompts: list[HeldOutPrompt], max_new_tokens: int
) -> list[Answer]:
    """Greedy answers of ``checkpoint`` on the GPU when there is one (the stop token that ends an
    answer is not counted in its tokens)."""
    from hcx.infer.engine import Engine
    from hcx.infer.sampling import SamplingParams
    from hcx.model.load import load_model, resolve_device

    model, tokenizer = load_model(checkpoint, *resolve_device()).pair()
    room = model.cfg.max_seq_len
    params = [
        SamplingParams(temperature=0.0, max_new_tokens=max(1, min(max_new_tokens, room - len(p.ids))))
        for p in prompts
    ]
    completions = Engine(model.eval(), tokenizer).generate([p.ids for p in prompts], params)
    answers = []
    for prompt, completion in zip(prompts, completions, strict=True):
        ended = completion.finish_reason == "stop" and completion.stop_reason == tokenizer.end_of_turn_id
        ids = completion.token_ids[:-1] if completion.finish_reason == "stop" else completion.token_ids
        answers.append(Answer(prompt.language, tokenizer.decode(prompt.ids), completion.text, ids, ended))
    return answers


def compare_answers(
    checkpoints: dict[str, str], cfg: AnswersConfig, out_dir: str | Path
) -> dict[str, dict[str, float]]:
    """Answer the held-out prompts with every checkpoint; write ``answers.json`` and ``answers.md``."""
    prompts = read_held_out_prompts(cfg.prompts, cfg.count)
    answers = {
        name: generate_answers(path, prompts, cfg.max_new_tokens) for name, path in checkpoints.items()
    }
    rates = {name: answer_rates(found) for name, found in answers.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "prompts": len(prompts),
        "rates": rates,
        "answers": {name: [asdict(a) for a in found] for name, found in answers.items()},
    }
    (out / "answers.json").write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "answers.md").write_text(answers_markdown(prompts, answers, rates, cfg.samples), encoding="utf-8")
    return rates


def answers_markdown(
    prompts: list[HeldOutPrompt],
    answers: dict[str, list[Answer]],
    rates: dict[str, dict[str, float]],
    samples: int,
) -> str:
    names = list(answers)
    lines = [f"# What the models say ({len(prompts)} held-out SFT prompts, greedy)", ""]
    lines += ["| rate | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for rate in RATES:
        lines.append(f"| {rate} | " + " | ".join(f"{rates[n][rate]:.3g}" for n in names) + " |")
    shown: dict[str, int] = {}
    for i, prompt in enumerate(prompts):
        if shown.get(prompt.language, 0) >= samples:
            continue
        shown[prompt.language] = shown.get(prompt.language, 0) + 1
        first = answers[names[0]][i]
        lines += ["", f"## {prompt.language}: {_quote(first.prompt)}", ""]
        lines += [f"- **{name}**: {_quote(answers[name][i].text) or '(empty)'}" for name in names]
    return "\n".join(lines) + "\n"


def _quote(text: str, limit: int = 400) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
