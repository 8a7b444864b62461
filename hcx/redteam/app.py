"""The red-team web app (SPEC §7): sign in, attack, score, write the safe answer, export.

Server-rendered HTML (Jinja2 with autoescaping, no JavaScript): every page works in any
browser and everything an annotator types is shown as text, never as markup. Input is
untrusted: bodies are size-bounded before they are read, every field is bounded and
validated (:mod:`hcx.redteam.forms`), every POST carries the session's CSRF token
(:mod:`hcx.redteam.csrf`), and the signed session cookie is HttpOnly and SameSite=Lax.
An annotator sees only their own attack sessions (another's is a 404, as if it did not
exist); an admin sees every session but changes none.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from hcx.redteam import attacks
from hcx.redteam.auth import COOKIE_NAME, CookieSigner, LoginThrottle, SignIn, authenticate, signing_key
from hcx.redteam.config import RedteamConfig
from hcx.redteam.db import AttackSession, Score, Turn, User, WrittenAnswer, open_database, scrub
from hcx.redteam.db import Response as ModelResponse
from hcx.redteam.export import FILES, build_export, jsonl, visible_sessions
from hcx.redteam.forms import labelled_choice, read_form, score_field, text_field
from hcx.redteam.responders import Candidate, Responder, ResponderError
from hcx.redteam.stats import attack_success

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# Ids are 32-bit INTEGER columns: a larger (or non-positive) id names no row, on any backend.
MAX_ID = 2**31 - 1
CsrfForm = Annotated[FormData, Depends(read_form)]


class SignInRequired(Exception):
    pass


def create_app(
    cfg: RedteamConfig, responders: list[Responder], sessions: sessionmaker | None = None
) -> FastAPI:
    """The app over the database ``cfg.db`` (migrated on creation) and the given responders."""
    db_sessions = sessions or open_database(cfg.db)
    with db_sessions() as db:
        signer = CookieSigner(signing_key(db), cfg.session_hours * 3600)
    templates = Jinja2Templates(directory=HERE / "templates")
    throttle = LoginThrottle(cfg.max_failed_sign_ins, window_s=300)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        for responder in responders:
            await responder.close()

    app = FastAPI(title="hcx red team", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.cfg = cfg
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # --- request plumbing ------------------------------------------------------------------------
    def refused_body(request: Request) -> HTMLResponse | None:
        if request.method != "POST":
            return None
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return error_page(request, 411, "a request body needs a Content-Length")
        if int(length) > cfg.max_body_bytes:
            return error_page(request, 413, f"request body over {cfg.max_body_bytes} bytes")
        return None

    @app.middleware("http")
    async def bound_and_sign(request: Request, call_next):
        found = signer.loads(request.cookies.get(COOKIE_NAME))
        request.state.sign_in = found or SignIn.anonymous()
        response = refused_body(request) or await call_next(request)
        if request.state.sign_in != found:
            response.set_cookie(
                COOKIE_NAME,
                signer.dumps(request.state.sign_in),
                max_age=int(cfg.session_hours * 3600),
                httponly=True,
                samesite="lax",
                secure=cfg.secure_cookies,
            )
        response.headers.update(SECURITY_HEADERS)
        return response

    def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            request,
            template,
            {"cfg": cfg, "csrf_token": request.state.sign_in.csrf, "user": None, **context},
            status_code=status_code,
        )

    def error_page(request: Request, status: int, message: str, **context: Any) -> HTMLResponse:
        return render(request, "error.html", status, status=status, message=message, **context)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return error_page(request, error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_path(request: Request, error: RequestValidationError) -> Response:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return error_page(request, 422, f"invalid request: {where}")

    @app.exception_handler(SignInRequired)
    async def to_login(request: Request, _: SignInRequired) -> Response:
        return RedirectResponse("/login", status_code=303)

    def current_user(request: Request, db: Session) -> User | None:
        """The signed-in user, unless the cookie's sign-in was revoked since (a sign-out)."""
        sign_in: SignIn = request.state.sign_in
        user = db.get(User, sign_in.user_id) if sign_in.user_id is not None else None
        return user if user is not None and user.session_generation == sign_in.generation else None

    def signed_in_user(request: Request, db: Session) -> User:
        user = current_user(request, db)
        if user is None:
            raise SignInRequired
        return user

    def attack_session(db: Session, user: User, session_id: int, change: bool = False) -> AttackSession:
        if not 0 < session_id <= MAX_ID:
            raise HTTPException(404, f"no attack session {session_id}")
        session = db.get(
            AttackSession,
            session_id,
            options=[
                selectinload(AttackSession.turns)
                .selectinload(Turn.responses)
                .selectinload(ModelResponse.score),
                selectinload(AttackSession.turns).selectinload(Turn.answer),
            ],
        )
        if session is None or (session.user_id != user.id and not user.is_admin):
            raise HTTPException(404, f"no attack session {session_id}")
        if change and session.user_id != user.id:
            raise HTTPException(403, "only the annotator who owns a session can change it")
        return session

    def session_turn(session: AttackSession, position: int) -> Turn:
        for turn in session.turns:
            if turn.position == position:
                return turn
        raise HTTPException(404, f"session {session.id} has no turn {position}")

    def to_session(session_id: int, anchor: str = "") -> RedirectResponse:
        return RedirectResponse(f"/sessions/{session_id}{anchor}", status_code=303)

    # Handlers that touch the database are plain ``def``: FastAPI runs them in its thread pool,
    # so a slow query holds one worker thread, never the event loop every other request needs.
    # --- sign-in -------------------------------------------------------------------------------
    @app.get("/login")
    async def login_page(request: Request) -> Response:
        return render(request, "login.html")

    @app.post("/login")
    def login(request: Request, form: CsrfForm) -> Response:
        name = text_field(form, "name", 64, "user name")
        password = text_field(form, "password", 1024, "password")
        if not throttle.attempt(name):
            raise HTTPException(429, "too many failed sign-ins for this name; wait a few minutes")
        with db_sessions() as db:
            user = authenticate(db, name, password)
        if user is None:
            return render(request, "login.html", 401, failed=True, name=name)
        throttle.succeeded(name)
        request.state.sign_in = SignIn.of(user)
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    def logout(request: Request, _: CsrfForm) -> Response:
        with db_sessions() as db:
            user = current_user(request, db)
            if user is not None:
                user.session_generation += 1
                db.commit()
        request.state.sign_in = SignIn.anonymous()
        return RedirectResponse("/login", status_code=303)

    # --- attack sessions -----------------------------------------------------------------------
    @app.get("/")
    def index(request: Request) -> Response:
        with db_sessions() as db:
            user = signed_in_user(request, db)
            query = (
                select(AttackSession, User.name, func.count(Turn.id))
                .join(User)
                .outerjoin(Turn)
                .group_by(AttackSession.id, User.name)
                .order_by(AttackSession.id.desc())
            )
            if not user.is_admin:
                query = query.where(AttackSession.user_id == user.id)
            rows = db.execute(query).all()
            return render(request, "index.html", user=user, rows=rows)

    @app.post("/sessions")
    def new_session(request: Request, form: CsrfForm) -> Response:
        topic = labelled_choice(form, "topic", cfg.topics, cfg.max_label_chars, "topic")
        method = labelled_choice(form, "method", cfg.methods, cfg.max_label_chars, "attack method")
        with db_sessions() as db:
            user = signed_in_user(request, db)
            session = AttackSession(user_id=user.id, topic=topic, method=method)
            db.add(session)
            db.commit()
            return to_session(session.id)

    @app.get("/sessions/{session_id}")
    def session_page(request: Request, session_id: int) -> Response:
        with db_sessions() as db:
            user = signed_in_user(request, db)
            session = attack_session(db, user, session_id)
            last = session.turns[-1] if session.turns else None
            can_attack = (
                session.user_id == user.id
                and len(session.turns) < cfg.max_turns
                and (last is None or attacks.is_finished(last, cfg.score_max))
            )
            return render(
                request,
                "session.html",
                user=user,
                session=session,
                attacks=attacks,
                can_attack=can_attack,
                owner=session.user_id == user.id,
                scores=range(cfg.score_min, cfg.score_max + 1),
            )

    def next_turn(request: Request, session_id: int, prompt: str) -> tuple[int, attacks.Messages]:
        """The position of the session's next attack prompt and the conversation the models answer."""
        with db_sessions() as db:
            user = signed_in_user(request, db)
            session = attack_session(db, user, session_id, change=True)
            if len(session.turns) >= cfg.max_turns:
                raise HTTPException(422, f"a session has at most {cfg.max_turns} attack prompts")
            if session.turns and not attacks.is_finished(session.turns[-1], cfg.score_max):
                raise HTTPException(
                    409, "score every response (and write an answer if none is perfect) first"
                )
            return len(session.turns), [*attacks.history(session.turns), {"role": "user", "content": prompt}]

    def save_turn(session_id: int, position: int, prompt: str, candidates: list[Candidate]) -> Response:
        with db_sessions() as db:
            turn = Turn(session_id=session_id, position=position, prompt=prompt)
            turn.responses = [
                ModelResponse(
                    position=i,
                    responder=scrub(c.responder),
                    text=scrub(c.text),
                    finish_reason=scrub(c.finish_reason),
                )
                for i, c in enumerate(candidates)
            ]
            db.add(turn)
            try:
                db.commit()
            except IntegrityError:
                raise HTTPException(409, "this session changed meanwhile (sent twice?); reload it") from None
            return to_session(session_id, f"#turn-{turn.position}")

    @app.post("/sessions/{session_id}/turns")
    async def attack(request: Request, session_id: int, form: CsrfForm) -> Response:
        """Async: the models generate on the event loop; the database work goes to the thread pool."""
        prompt = text_field(form, "prompt", cfg.max_prompt_chars, "attack prompt")
        position, messages = await run_in_threadpool(next_turn, request, session_id, prompt)
        try:
            answers = await asyncio.gather(*(r.respond(messages) for r in responders))
        except ResponderError as error:
            return error_page(request, 502, str(error), prompt=prompt)
        candidates = [c for answer in answers for c in answer]
        return await run_in_threadpool(save_turn, session_id, position, prompt, candidates)

    @app.post("/sessions/{session_id}/turns/{position}/scores")
    def score(request: Request, session_id: int, position: int, form: CsrfForm) -> Response:
        with db_sessions() as db:
            user = signed_in_user(request, db)
            turn = session_turn(attack_session(db, user, session_id, change=True), position)
            for response in turn.responses:
                label = f"response {response.position + 1}"
                harmlessness = score_field(
                    form, f"harm_{response.id}", cfg.score_min, cfg.score_max, f"{label} harmlessness"
                )
                quality = score_field(
                    form, f"quality_{response.id}", cfg.score_min, cfg.score_max, f"{label} quality"
                )
                if response.score is None:
                    response.score = Score(harmlessness=harmlessness, quality=quality)
                else:
                    response.score.harmlessness, response.score.quality = harmlessness, quality
            db.commit()
            return to_session(session_id, f"#turn-{position}")

    @app.post("/sessions/{session_id}/turns/{position}/answer")
    def write_answer(request: Request, session_id: int, position: int, form: CsrfForm) -> Response:
        text = text_field(form, "answer", cfg.max_answer_chars, "answer")
        with db_sessions() as db:
            user = signed_in_user(request, db)
            turn = session_turn(attack_session(db, user, session_id, change=True), position)
            if not attacks.all_scored(turn):
                raise HTTPException(409, "score every response before writing the answer")
            if turn.answer is None:
                turn.answer = WrittenAnswer(text=text)
            else:
                turn.answer.text = text
            db.commit()
            return to_session(session_id, f"#turn-{position}")

    # --- results -------------------------------------------------------------------------------
    @app.get("/stats")
    def stats_page(request: Request) -> Response:
        with db_sessions() as db:
            user = signed_in_user(request, db)
            stats = attack_success(visible_sessions(db, user), cfg.harmful_at_most)
            return render(request, "stats.html", user=user, stats=stats)

    @app.get("/export")
    def export_page(request: Request) -> Response:
        with db_sessions() as db:
            user = signed_in_user(request, db)
            export = build_export(visible_sessions(db, user), cfg.score_max)
            return render(request, "export.html", user=user, manifest=export.manifest(), files=FILES)

    @app.get("/export/{name}")
    def export_file(request: Request, name: str) -> Response:
        if name not in FILES:
            raise HTTPException(404, f"no export file {name}")
        with db_sessions() as db:
            user = signed_in_user(request, db)
            export = build_export(visible_sessions(db, user), cfg.score_max)
        return Response(
            jsonl(export.rows[name]),
            media_type="application/jsonl; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return app
