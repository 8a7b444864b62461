"""Cross-lingual transfer (SPEC §6): instruction-tune at several Korean:English ratios, score both.

The report asks how instruction following learned in one language carries to the other:
one base checkpoint is fine-tuned with :mod:`hcx.align.sft` once per Korean share of the
SFT mix (default 1:0, 0.995:0.005, 0.5:0.5, 0.005:0.995, 0:1), then each model answers the
*held-out* SFT prompts of each language (the samples ``hcx sft`` set aside, never trained
on). Answers are scored with ROUGE-L against the held-out answers (:mod:`hcx.eval.rouge`,
Kiwi morphemes for Korean) and, when a judge endpoint is configured, by the MT-Bench
single-answer judge (rating × 10). The result is ``transfer.json`` and ``transfer.png``
(score against ratio, one line per language and metric).

Each ratio's model, answers and judgments are kept in ``OUTPUT_DIR/ratio_<r>/``; a re-run
reuses whatever finished.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from hcx.align.config import SftConfig
from hcx.align.conversations import check_messages, tokenize_conversation
from hcx.config import Section
from hcx.eval.judge import Judge, JudgeConfig
from hcx.eval.mt_bench import Question, judge_prompt, load_judge_prompts
from hcx.eval.rouge import rouge_l
from hcx.records import Rejected, hold_out, read_records
from hcx.tokenizer import Tokenizer, load

DEFAULT_RATIOS = [1.0, 0.995, 0.5, 0.005, 0.0]


class TransferConfig(Section):
    """``transfer:`` section. ``sft`` is the fine-tuning recipe shared by every ratio (its
    ``init`` is the base checkpoint; ``korean_ratio``, ``output_dir`` and ``export_hf`` are set
    per ratio)."""

    sft: SftConfig = Field(default_factory=SftConfig)
    ratios: list[float] = Field(default_factory=lambda: list(DEFAULT_RATIOS))
    output_dir: str = "runs/transfer"
    eval_samples: int = Field(50, ge=1, description="held-out prompts scored per language")
    max_new_tokens: int = Field(256, ge=1)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    judge_data_dir: str | None = Field(
        None, description="data root holding eval/mt_bench/judge_prompts.jsonl"
    )

    @field_validator("ratios")
    @classmethod
    def _check_ratios(cls, ratios: list[float]) -> list[float]:
        if not ratios or any(not 0.0 <= r <= 1.0 for r in ratios):
            raise ValueError(f"transfer.ratios must be Korean shares in [0, 1], got {ratios}")
        return ratios


def ratio_label(korean: float) -> str:
    return f"{korean:g}:{1 - korean:.6g}"


def held_out_prompts(cfg: SftConfig, tokenizer: Tokenizer, max_len: int) -> dict[str, list[list[dict]]]:
    """The conversations ``hcx sft`` held out per language, reproduced exactly.

    Same files, same tokenization filter, same seeded :func:`hcx.records.hold_out`, so these
    are the samples none of the ratios trained on.
    """

    def parse(row: Mapping[str, Any]) -> list[dict[str, str]]:
        if "messages" not in row:
            raise Rejected("no 'messages' field")
        messages = check_messages(row["messages"])
        if len(tokenize_conversation(tokenizer, messages, "")) > max_len:
            raise Rejected("longer than the context")
        return messages

    out: dict[str, list[list[dict]]] = {}
    for source in cfg.sources:
        rows = read_records(source.path, parse, cfg.bad_records, what="SFT data")
        kept_out, _ = hold_out(rows, cfg.held_out, cfg.seed)
        out.setdefault(source.language, []).extend(kept_out)
    return out


def _split(conversation: list[dict]) -> tuple[list[dict], str]:
    """Everything before the last assistant turn, and that turn (the reference answer)."""
    last = max(i for i, m in enumerate(conversation) if m["role"] == "assistant")
    return conversation[:last], conversation[last]["content"]


def _answers(
    model_dir: Path, tokenizer_dir: Path, prompts: list[list[dict]], max_new_tokens: int
) -> list[str]:
    from hcx.infer.engine import Engine
    from hcx.infer.sampling import SamplingParams
    from hcx.model.load import load_model

    model = load_model(model_dir).model
    tokenizer = load(tokenizer_dir)
    engine = Engine(model, tokenizer)
    ids = [tokenizer.encode_chat({"messages": p}, add_generation_prompt=True).ids for p in prompts]
    room = model.cfg.max_seq_len
    params = [
        SamplingParams(max_new_tokens=max(1, min(max_new_tokens, room - len(i))), temperature=0.0)
        for i in ids
    ]
    return [c.text.strip() for c in engine.generate(ids, params, progress=True)]


def _judge_scores(
    config: TransferConfig, prompts: list[list[dict]], answers: list[str], cache: Path
) -> list[float]:
    done = {}
    if cache.is_file():
        done = {
            r["index"]: r["rating"] for r in map(json.loads, cache.read_text(encoding="utf-8").splitlines())
        }
    judge = Judge(config.judge)
    templates = load_judge_prompts(config.judge_data_dir)
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        if i in done:
            continue
        question = Question(
            i, "writing", ["\n\n".join(m["content"] for m in prompt if m["role"] == "user")], None
        )
        system, user = judge_prompt(question, [answer], 1, templates)
        done[i] = judge.rate(system, user, item=f"{cache.parent.name} prompt {i}").rating
        with cache.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"index": i, "rating": done[i]}) + "\n")
    return [10.0 * done[i] for i in range(len(prompts))]


def score_ratio(
    config: TransferConfig, korean: float, tokenizer_dir: Path, held_out: dict[str, list[list[dict]]]
) -> dict[str, Any]:
    """Fine-tune at one Korean share (unless already done), then score each language."""
    from hcx.align.sft import sft

    folder = Path(config.output_dir) / f"ratio_{korean:g}"
    scores_path = folder / "scores.json"
    if scores_path.is_file():
        return json.loads(scores_path.read_text(encoding="utf-8"))
    model_dir = folder / "hf"
    if not (model_dir / "config.json").is_file():
        sft_cfg = config.sft.model_copy(
            update={"korean_ratio": korean, "output_dir": str(folder / "sft"), "export_hf": str(model_dir)}
        )
        sft(sft_cfg)
    result: dict[str, Any] = {"korean_ratio": korean, "label": ratio_label(korean)}
    for language, conversations in sorted(held_out.items()):
        pairs = [_split(c) for c in conversations[: config.eval_samples]]
        prompts = [p for p, _ in pairs]
        answers = _answers(model_dir, tokenizer_dir, prompts, config.max_new_tokens)
        rouge = [rouge_l(a, [ref], language) for a, (_, ref) in zip(answers, pairs, strict=True)]
        result[f"rougeL_{language}"] = 100.0 * sum(rouge) / len(rouge)
        if config.judge.base_url:
            judged = _judge_scores(config, prompts, answers, folder / f"judgments_{language}.jsonl")
            result[f"judge_{language}"] = sum(judged) / len(judged)
        with (folder / f"answers_{language}.jsonl").open("w", encoding="utf-8") as f:
            for prompt, answer, (_, ref) in zip(prompts, answers, pairs, strict=True):
                f.write(
                    json.dumps({"prompt": prompt, "answer": answer, "reference": ref}, ensure_ascii=False)
                    + "\n"
                )
    scores_path.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return result


def plot_transfer(rows: list[dict[str, Any]], path: Path) -> Path:
    """Score against Korean share of the SFT mix; categorical x so 1 and 0.995 stay apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: -r["korean_ratio"])
    metrics = sorted({k for r in rows for k in r if k.startswith(("rougeL_", "judge_"))})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = list(range(len(rows)))
    for metric in metrics:
        kind, language = metric.split("_", 1)
        style = "-o" if kind == "rougeL" else "--s"
        ax.plot(x, [r.get(metric, float("nan")) for r in rows], style, label=f"{language} {kind}")
    ax.set_xticks(x, [r["label"] for r in rows])
    ax.set_xlabel("Korean : English share of the SFT data")
    ax.set_ylabel("score (0-100)")
    ax.set_title("Cross-lingual transfer of instruction following")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_transfer(config: TransferConfig) -> dict[str, Any]:
    """The whole experiment; returns (and writes to ``transfer.json``) one row per ratio."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    from hcx.model.load import load_model

    tokenizer_dir = Path(config.sft.tokenizer or config.sft.init)
    tokenizer = load(tokenizer_dir)
    context = load_model(config.sft.init).model.cfg.max_seq_len
    max_len = config.sft.max_len or context
    if config.sft.batching == "packed":
        max_len = min(max_len, config.sft.seq_len)
    held_out = held_out_prompts(config.sft, tokenizer, max_len)
    missing = [lang for lang, convs in held_out.items() if not convs]
    if missing or not held_out:
        raise ValueError(
            f"transfer: no held-out SFT samples for {missing or 'any language'}; set sft.held_out > 0"
        )
    rows = [score_ratio(config, r, tokenizer_dir, held_out) for r in config.ratios]
    summary = {"rows": rows, "eval_samples": config.eval_samples, "base": config.sft.init}
    (out / "transfer.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    plot_transfer(rows, out / "transfer.png")
    return summary
