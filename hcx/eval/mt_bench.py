"""MT-Bench and Ko-MT-Bench: two-turn answers from the model, graded 1-10 by an LLM judge.

The protocol of Zheng et al. 2023 (FastChat ``llm_judge``) as the report uses it (SPEC §6 chat
row): each question has two user turns; the model answers turn 1, then turn 2 with its own
first answer in the context. Each turn is graded alone with FastChat's single-answer prompts
(``single-v1`` / ``single-v1-multi-turn``; the ``-math-`` variants with the reference answer
for math, reasoning and coding). The score is the mean rating × 10 (the report's 0-100 scale).

Answers and judgments are appended to jsonl files in the output directory as they finish; a
re-run reads them back and only generates or judges what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from tqdm.auto import tqdm

from hcx.config import Section
from hcx.eval.judge import Judge, JudgeConfig, JudgeError
from hcx.eval.local_data import eval_root, load_benchmark

Messages = list[dict[str, str]]
ChatModel = Callable[[Sequence[Messages], Sequence[float]], list[str]]
"""Answers a batch of conversations (each ending with a user turn) at the given temperatures."""

NEED_REFERENCE = ("math", "reasoning", "coding")
# FastChat's sampling temperature per category (common.py temperature_config).
TEMPERATURE = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
KO_MT_BENCH_HUB = ("LGAI-EXAONE/KoMT-Bench", None)


class MtBenchConfig(Section):
    benchmark: Literal["mt_bench", "ko_mt_bench"] = "mt_bench"
    data_dir: str | None = Field(None, description="shared data root; Ko-MT-Bench falls back to the hub")
    output_dir: str = "runs/mt_bench"
    limit: int | None = Field(None, ge=1, description="first N questions only")
    question_ids: list[int] | None = Field(None, description="only these questions")
    max_new_tokens: int = Field(1024, ge=1)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)


@dataclass(frozen=True)
class Question:
    question_id: int
    category: str
    turns: list[str]
    reference: list[str] | None


@dataclass(frozen=True)
class MtBenchScore:
    score: float
    by_turn: dict[int, float]
    by_category: dict[str, float]
    judged: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "by_turn": self.by_turn,
            "by_category": self.by_category,
            "judged": self.judged,
        }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: invalid JSON ({exc.msg})") from exc
    return rows


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


def load_questions(benchmark: str, data_dir: str | Path | None, limit: int | None = None) -> list[Question]:
    """Questions with reference answers for the categories that need them.

    MT-Bench keeps GPT-4 references in ``reference_answer_gpt-4.jsonl`` (FastChat layout);
    Ko-MT-Bench carries them in a ``reference`` field and comes from ``eval/ko_mt_bench/`` when
    the data directory has it, else from the hub ``LGAI-EXAONE/KoMT-Bench`` (the data directory
    still supplies the judge prompts).
    """
    if benchmark == "mt_bench":
        root = eval_root(data_dir)
        if root is None:
            raise ValueError("MT-Bench needs a data directory with eval/mt_bench/ (FastChat's files)")
        rows = load_benchmark("mt_bench", {"test": "question.jsonl"}, data_dir=data_dir)["test"]
        references = {
            r["question_id"]: r["choices"][0]["turns"]
            for r in _read_jsonl(root / "mt_bench" / "reference_answer_gpt-4.jsonl")
        }
    else:
        root = eval_root(data_dir)
        local = root if root is not None and (root / "ko_mt_bench").is_dir() else None
        loaded = load_benchmark(
            "ko_mt_bench", {"train": "question.jsonl"}, hub=KO_MT_BENCH_HUB, data_dir=local
        )
        rows, references = loaded["train"], {}
    questions = []
    for row in rows:
        reference = row.get("reference") or references.get(row["question_id"])
        questions.append(Question(int(row["question_id"]), row["category"], list(row["turns"]), reference))
    return questions[:limit] if limit else questions


def load_judge_prompts(data_dir: str | Path | None) -> dict[str, dict[str, Any]]:
    root = eval_root(data_dir)
    path = (root / "mt_bench" / "judge_prompts.jsonl") if root is not None else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"MT-Bench judge prompts not found: {path} (FastChat's judge_prompts.jsonl)")
    return {row["name"]: row for row in _read_jsonl(path)}


def generate_answers(model: ChatModel, questions: Sequence[Question], cache: Path) -> dict[int, list[str]]:
    """Two turns per question; turn 2 sees the model's own turn-1 answer. Cached per question."""
    done = {row["question_id"]: row["turns"] for row in _read_jsonl(cache)}
    todo = [q for q in questions if q.question_id not in done]
    if todo:
        temperatures = [TEMPERATURE.get(q.category, 0.7) for q in todo]
        first = model([[{"role": "user", "content": q.turns[0]}] for q in todo], temperatures)
        second = model(
            [
                [
                    {"role": "user", "content": q.turns[0]},
                    {"role": "assistant", "content": a},
                    {"role": "user", "content": q.turns[1]},
                ]
                for q, a in zip(todo, first, strict=True)
            ],
            temperatures,
        )
        for q, a1, a2 in zip(todo, first, second, strict=True):
            done[q.question_id] = [a1, a2]
            _append_jsonl(cache, {"question_id": q.question_id, "turns": [a1, a2]})
    return {q.question_id: done[q.question_id] for q in questions}


def judge_prompt(
    question: Question, answers: list[str], turn: int, prompts: dict[str, dict[str, Any]]
) -> tuple[str, str]:
    """(system, user) for one turn, FastChat's single-answer template filled in."""
    with_reference = question.category in NEED_REFERENCE and question.reference is not None
    name = "single-math-v1" if with_reference else "single-v1"
    if turn == 2:
        name += "-multi-turn"
    template = prompts[name]
    fields: dict[str, str] = {}
    if turn == 1:
        fields = {"question": question.turns[0], "answer": answers[0]}
    else:
        fields = {
            "question_1": question.turns[0],
            "question_2": question.turns[1],
            "answer_1": answers[0],
            "answer_2": answers[1],
        }
    if with_reference:
        assert question.reference is not None
        fields["ref_answer_1"] = question.reference[0]
        fields["ref_answer_2"] = question.reference[1] if len(question.reference) > 1 else ""
    return template["system_prompt"], template["prompt_template"].format(**fields)


def judge_answers(
    questions: Sequence[Question],
    answers: dict[int, list[str]],
    judge: Judge,
    prompts: dict[str, dict[str, Any]],
    cache: Path,
) -> list[dict[str, Any]]:
    """Rate every (question, turn) not yet in ``cache``; each finished judgment is appended at once."""
    done = {(row["question_id"], row["turn"]): row for row in _read_jsonl(cache)}
    todo = [(q, t) for q in questions for t in (1, 2) if (q.question_id, t) not in done]
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=judge.config.parallel) as pool:
        futures = {}
        for q, turn in todo:
            system, user = judge_prompt(q, answers[q.question_id], turn, prompts)
            item = f"question {q.question_id} turn {turn}"
            futures[pool.submit(judge.rate, system, user, item=item)] = (q, turn)
        for future in tqdm(as_completed(futures), total=len(futures), desc="judging", leave=False):
            q, turn = futures[future]
            try:
                judgment = future.result()
            except JudgeError as exc:
                failures.append(str(exc))
                continue
            row = {
                "question_id": q.question_id,
                "category": q.category,
                "turn": turn,
                "rating": judgment.rating,
                "judgment": judgment.text,
                "attempts": judgment.attempts,
            }
            done[(q.question_id, turn)] = row
            _append_jsonl(cache, row)
    if failures:
        raise JudgeError(
            f"{len(failures)} judgment(s) failed; {len(done)} finished ones are kept in {cache} "
            f"and a re-run resumes from them. First: {failures[0]}"
        )
    return [done[(q.question_id, t)] for q in questions for t in (1, 2)]


def summarize(judgments: Sequence[dict[str, Any]]) -> MtBenchScore:
    """Mean rating × 10 overall, per turn and per category (0-100, the report's scale)."""

    def mean10(rows: Sequence[dict[str, Any]]) -> float:
        return 10.0 * sum(r["rating"] for r in rows) / len(rows)

    if not judgments:
        raise ValueError("no judgments to summarize")
    turns = sorted({r["turn"] for r in judgments})
    categories = sorted({r["category"] for r in judgments})
    return MtBenchScore(
        score=mean10(judgments),
        by_turn={t: mean10([r for r in judgments if r["turn"] == t]) for t in turns},
        by_category={c: mean10([r for r in judgments if r["category"] == c]) for c in categories},
        judged=len(judgments),
    )


def run_mt_bench(model: ChatModel, config: MtBenchConfig) -> MtBenchScore:
    """Generate, judge, summarize; writes answers.jsonl, judgments.jsonl and score.json."""
    out = Path(config.output_dir) / config.benchmark
    out.mkdir(parents=True, exist_ok=True)
    questions = load_questions(config.benchmark, config.data_dir)
    if config.question_ids is not None:
        questions = [q for q in questions if q.question_id in set(config.question_ids)]
    questions = questions[: config.limit] if config.limit else questions
    prompts = load_judge_prompts(config.data_dir)
    answers = generate_answers(model, questions, out / "answers.jsonl")
    judgments = judge_answers(questions, answers, Judge(config.judge), prompts, out / "judgments.jsonl")
    score = summarize(judgments)
    (out / "score.json").write_text(json.dumps(score.to_dict(), indent=2), encoding="utf-8")
    return score


def engine_chat_model(engine: Any, max_new_tokens: int = 1024) -> ChatModel:
    """A :data:`ChatModel` on hcx's inference engine (chat turns per SPEC §5.1); answers are cut
    where the model's context ends."""
    from hcx.infer.sampling import SamplingParams

    tokenizer = engine.tokenizer
    context = engine.model.cfg.max_seq_len

    def answer(conversations: Sequence[Messages], temperatures: Sequence[float]) -> list[str]:
        prompts = [
            tokenizer.encode_chat({"messages": list(c)}, add_generation_prompt=True).ids
            for c in conversations
        ]
        too_long = [i for i, p in enumerate(prompts) if len(p) >= context]
        if too_long:
            first = too_long[0]
            raise ValueError(
                f"MT-Bench: {len(too_long)} conversation(s) do not fit the model context of {context} "
                f"tokens (first: {len(prompts[first])} tokens, {conversations[first][-1]['content'][:60]!r})"
            )
        params = [
            SamplingParams(max_new_tokens=min(max_new_tokens, context - len(p)), temperature=t)
            for p, t in zip(prompts, temperatures, strict=True)
        ]
        return [c.text.strip() for c in engine.generate(prompts, params, progress=True)]

    return answer
