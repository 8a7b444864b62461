"""MT-Bench judging against a real OpenAI-compatible HTTP server on 127.0.0.1.

The server (``http.server``) answers ``POST /v1/chat/completions`` in the OpenAI wire format
with canned judgments: a 500 on the very first call, a reply without a rating once for the
question whose turn-1 answer contains MALFORMED_ONCE, then "Rating: [[r]]" with r chosen from
the prompt so the expected score can be computed by hand.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hcx.eval.judge import Judge, JudgeConfig, JudgeError, parse_rating
from hcx.eval.mt_bench import (
    MtBenchConfig,
    engine_chat_model,
    generate_answers,
    judge_answers,
    judge_prompt,
    load_judge_prompts,
    load_questions,
    run_mt_bench,
    summarize,
)

FIXTURES = Path(__file__).parent / "fixtures"


class JudgeServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), JudgeHandler)
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.errors = 0
        self.malformed = 0
        self.always_fail = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def rating_for(prompt: str) -> int:
    """Reference-graded (math) turns get 4, first turns 8, second turns 6."""
    if "Reference" in prompt:
        return 4
    return 6 if "### User:" in prompt else 8


class JudgeHandler(BaseHTTPRequestHandler):
    server: JudgeServer

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions"
        prompt = request["messages"][-1]["content"]
        with self.server.lock:
            self.server.calls.append(prompt)
        if self.headers["Authorization"] != "Bearer sk-judge-test":
            self.reply(
                401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
            )
            return
        with self.server.lock:
            first_call = len(self.server.calls) == 1
            malformed = "MALFORMED_ONCE" in prompt and "### User:" not in prompt and not self.server.malformed
            self.server.malformed += malformed
            fail = first_call or self.server.always_fail
            self.server.errors += fail
        if fail:
            self.reply(500, {"error": {"message": "upstream overloaded", "type": "server_error"}})
            return
        if malformed:
            text = "The answer is helpful and accurate overall, I would rate it highly."
        else:
            text = f"The assistant addresses the question. Rating: [[{rating_for(prompt)}]]"
        self.reply(
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": request["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            },
        )


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[JudgeServer]:
    monkeypatch.setenv("HCX_JUDGE_API_KEY", "sk-judge-test")
    srv = JudgeServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def judge_config(server: JudgeServer, **kw: object) -> JudgeConfig:
    return JudgeConfig(base_url=server.url, backoff_s=0.01, parallel=2, **kw)


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("Good answer. Rating: [[7]]", 7.0),
        ("Rating: [[8.5]] and later [[2]]", 8.5),
        ("Rating: [6]", 6.0),
        ("I'd give it [[11]]", None),
        ("Rating: [[0]]", None),
        ("No rating given.", None),
    ],
)
def test_parse_rating(text: str, rating: float | None):
    assert parse_rating(text) == rating


def reference_answers(data_dir: Path) -> dict[int, list[str]]:
    """GPT-4's reference answers stand in for a model's answers (realistic text to judge)."""
    rows = [json.loads(x) for x in (data_dir / "eval" / "mt_bench" / "reference_answer_gpt-4.jsonl").open()]
    return {r["question_id"]: r["choices"][0]["turns"] for r in rows}


def test_mt_bench_judging_retries_caches_and_resumes(server: JudgeServer, data_dir: Path, tmp_path: Path):
    refs = reference_answers(data_dir)
    questions = [q for q in load_questions("mt_bench", data_dir) if q.question_id in refs][:2]
    questions += [q for q in load_questions("mt_bench", data_dir) if q.category == "writing"][:1]
    assert {q.category for q in questions[:2]} <= {"math", "reasoning", "coding"}
    writing = questions[2].question_id
    answers = {
        q.question_id: refs.get(q.question_id, ["MALFORMED_ONCE draft.", "A revision."]) for q in questions
    }
    cache = tmp_path / "answers.jsonl"
    cache.write_text("".join(json.dumps({"question_id": k, "turns": v}) + "\n" for k, v in answers.items()))
    config = MtBenchConfig(
        data_dir=str(data_dir),
        output_dir=str(tmp_path),
        question_ids=[q.question_id for q in questions],
        judge=judge_config(server),
    )

    out = tmp_path / "mt_bench"
    out.mkdir()
    cache.rename(out / "answers.jsonl")
    score = run_mt_bench(lambda convs, temps: pytest.fail("answers are cached"), config)
    assert server.errors == 1 and server.malformed == 1
    judgments = [json.loads(x) for x in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == 6
    assert {(j["question_id"], j["turn"]) for j in judgments} == {
        (q.question_id, t) for q in questions for t in (1, 2)
    }
    # math/reasoning/coding turns use the reference prompts (rating 4); writing turns 8 then 6
    expected = 10 * (4 * 4 + 8 + 6) / 6
    assert score.score == pytest.approx(expected)
    assert score.by_category["writing"] == pytest.approx(70.0)
    assert json.loads((out / "score.json").read_text())["score"] == pytest.approx(expected)
    assert any(j["attempts"] == 2 for j in judgments if j["question_id"] == writing)

    calls = len(server.calls)
    again = run_mt_bench(lambda convs, temps: pytest.fail("answers are cached"), config)
    assert len(server.calls) == calls and again.score == pytest.approx(expected)


def test_judge_failure_keeps_finished_items_and_resume_completes(
    server: JudgeServer, data_dir: Path, tmp_path: Path
):
    questions = load_questions("mt_bench", data_dir, limit=2)
    answers = {q.question_id: ["First answer.", "Second answer."] for q in questions}
    prompts = load_judge_prompts(data_dir)
    cache = tmp_path / "judgments.jsonl"
    server.calls.append("warm-up")  # skip the scripted first-call 500
    judge = Judge(judge_config(server, max_attempts=2))
    judge_answers(questions[:1], answers, judge, prompts, cache)
    server.always_fail = True
    with pytest.raises(JudgeError, match="finished ones are kept"):
        judge_answers(questions, answers, judge, prompts, cache)
    assert len(cache.read_text().splitlines()) == 2
    server.always_fail = False
    before = len(server.calls)
    rows = judge_answers(questions, answers, judge, prompts, cache)
    assert len(rows) == 4 and len(server.calls) - before == 2


def test_wrong_key_fails_at_once_without_retries(server: JudgeServer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HCX_JUDGE_API_KEY", "sk-wrong")
    judge = Judge(judge_config(server))
    with pytest.raises(JudgeError, match="HTTP 401"):
        judge.rate("system", "user", item="question 81 turn 1")
    assert len(server.calls) == 1


def test_judge_prompts_follow_fastchat_single_answer_templates(data_dir: Path):
    prompts = load_judge_prompts(data_dir)
    math_q = next(q for q in load_questions("mt_bench", data_dir) if q.category == "math")
    system, user = judge_prompt(math_q, ["A1", "A2"], 2, prompts)
    assert "[[rating]]" in system
    assert math_q.reference is not None and math_q.reference[1] in user
    assert "### Assistant A:\nA2" in user and math_q.turns[1] in user
    writing_q = next(q for q in load_questions("mt_bench", data_dir) if q.category == "writing")
    _, user = judge_prompt(writing_q, ["A1", "A2"], 1, prompts)
    assert "[Question]\n" + writing_q.turns[0] in user and "Reference" not in user


def test_ko_mt_bench_reads_the_shared_questions(data_dir: Path):
    """The official Ko-MT-Bench questions from the shared data, offline, split as MT-Bench's are."""
    questions = load_questions("ko_mt_bench", data_dir)
    english = {q.question_id: q for q in load_questions("mt_bench", data_dir)}
    assert len(questions) == 56 and {q.question_id for q in questions} == set(english)
    assert Counter(q.category for q in questions) == Counter(q.category for q in english.values())
    assert all(len(q.turns) == 2 and any("가" <= c <= "힣" for c in q.turns[0]) for q in questions)
    assert sum(q.reference is not None for q in questions) == 29


def test_ko_mt_bench_fixture_loads_in_hub_schema():
    questions = load_questions("ko_mt_bench", FIXTURES)
    assert [q.question_id for q in questions] == [1, 111, 141]
    assert questions[1].reference == ["넓이는 3입니다.", "외접원의 넓이는 5π입니다."]
    assert questions[0].reference is None and "제주도" in questions[0].turns[0]


def test_two_turn_generation_with_the_hcx_engine(base_model_dir: Path, data_dir: Path, tmp_path: Path):
    from hcx.infer.engine import Engine
    from hcx.model.hf import import_hf
    from hcx.tokenizer import load

    model = import_hf(base_model_dir)
    engine = Engine(model.eval(), load(base_model_dir))
    seen: list[list[dict[str, str]]] = []
    chat = engine_chat_model(engine, max_new_tokens=8)

    def recording(convs, temps):
        seen.extend(convs)
        return chat(convs, temps)

    questions = load_questions("ko_mt_bench", data_dir, limit=2)
    answers = generate_answers(recording, questions, tmp_path / "answers.jsonl")
    assert len(seen) == 4
    for q, conv in zip(questions, seen[2:], strict=True):
        assert conv[1] == {"role": "assistant", "content": answers[q.question_id][0]}
        assert conv[2]["content"] == q.turns[1]
    assert (
        generate_answers(lambda c, t: pytest.fail("cached"), questions, tmp_path / "answers.jsonl") == answers
    )


def test_summarize_is_mean_times_ten():
    rows = [
        {"question_id": 1, "category": "writing", "turn": 1, "rating": 9.0},
        {"question_id": 1, "category": "writing", "turn": 2, "rating": 5.0},
        {"question_id": 2, "category": "math", "turn": 1, "rating": 2.0},
        {"question_id": 2, "category": "math", "turn": 2, "rating": 4.0},
    ]
    score = summarize(rows)
    assert score.score == pytest.approx(50.0)
    assert score.by_turn == {1: pytest.approx(55.0), 2: pytest.approx(45.0)}
    assert score.by_category == {"math": pytest.approx(30.0), "writing": pytest.approx(70.0)}


def test_mt_bench_cli_scores_a_checkpoint_with_the_judge(
    server: JudgeServer, base_model_dir: Path, data_dir: Path, tmp_path: Path
):
    from typer.testing import CliRunner

    from hcx.cli import app

    server.calls.append("warm-up")  # skip the scripted first-call 500
    args = ["eval", "mt-bench", str(base_model_dir), "--data-dir", str(data_dir), "--judge-url", server.url]
    args += ["--max-new-tokens", "8", "--output", str(tmp_path)]
    args += ["--set", "mt_bench.question_ids=[116,144]", "--set", "mt_bench.judge.backoff_s=0.01"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # math 116 is graded against its reference (4, 4), stem 144 without (8, then 6)
    assert "mt_bench: 55.00 (turn 1 60.00, turn 2 50.00)" in result.output
    answers = [json.loads(x) for x in (tmp_path / "mt_bench" / "answers.jsonl").read_text().splitlines()]
    assert sorted(a["question_id"] for a in answers) == [116, 144]

    bad = CliRunner().invoke(app, [*args[:-4], "--set", "mt_bench.benchmark=mmlu"])
    assert bad.exit_code == 2 and "benchmark" in bad.output
