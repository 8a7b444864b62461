"""``hcx redteam``: serve the red-team app, manage its accounts, export its data (SPEC §7).

    hcx redteam user add alice                      # asks for the password
    hcx redteam user add admin --admin
    hcx redteam serve --model tiny=runs/tiny/hf --model api=http://127.0.0.1:8000/v1
    hcx redteam export --out runs/redteam/export

Every command reads the optional ``redteam:`` section of a recipe (``--recipe``), then the
command-line options and ``--set redteam.key=value`` overrides on top.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hcx.config import RecipeError, apply_overrides, load_section

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
user_app = typer.Typer(no_args_is_help=True, help="Annotator accounts.")
app.add_typer(user_app, name="user")

RecipeOption = Annotated[Path | None, typer.Option("--recipe", help="recipe YAML with a redteam: section")]
DbOption = Annotated[
    str | None, typer.Option("--db", help="SQLAlchemy URL (default sqlite:///runs/redteam/redteam.db)")
]
Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="override a field, e.g. --set redteam.max_turns=4")
]


def load_config(recipe: Path | None, overrides: list[str] | None, **options: Any):
    from hcx.redteam.config import RedteamConfig

    given = [f"redteam.{key}={json.dumps(value)}" for key, value in options.items() if value is not None]
    try:
        if recipe is not None:
            return load_section(recipe, "redteam", RedteamConfig, [*given, *(overrides or [])])
        raw = apply_overrides({}, [*given, *(overrides or [])])
        unknown = set(raw) - {"redteam"}
        if unknown:
            raise RecipeError(f"--set: only redteam.* fields apply here, got {sorted(unknown)}")
        return RedteamConfig.model_validate(raw.get("redteam", {}))
    except (RecipeError, ValueError) as error:
        raise typer.BadParameter(str(error)) from None


@app.command()
def serve(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", help="NAME=CHECKPOINT_DIR or NAME=http://host:port/v1[#model-id]; repeatable"
        ),
    ] = None,
    db: DbOption = None,
    host: Annotated[str | None, typer.Option(help="interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8100)")] = None,
    recipe: RecipeOption = None,
    overrides: Overrides = None,
) -> None:
    """Serve the red-team app: annotators attack the models, score their answers, write safe ones."""
    import uvicorn

    from hcx.redteam.app import create_app
    from hcx.redteam.responders import make_responders, parse_model

    try:
        models = dict(parse_model(spec) for spec in model) if model else None
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    cfg = load_config(recipe, overrides, db=db, host=host, port=port, models=models)
    try:
        responders = make_responders(cfg)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(f"red team: {len(responders)} model(s) x {len(cfg.sampling)} setting(s); data in {cfg.db}")
    uvicorn.run(create_app(cfg, responders), host=cfg.host, port=cfg.port)


@user_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="the annotator's sign-in name")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="HCX_REDTEAM_PASSWORD",
            help="asked for when not given (or taken from $HCX_REDTEAM_PASSWORD)",
        ),
    ],
    admin: Annotated[bool, typer.Option("--admin", help="sees every annotator's sessions")] = False,
    db: DbOption = None,
    recipe: RecipeOption = None,
    overrides: Overrides = None,
) -> None:
    """Create an annotator (or admin) account; only a salted scrypt hash of the password is stored."""
    from hcx.redteam.auth import add_user
    from hcx.redteam.db import open_database

    cfg = load_config(recipe, overrides, db=db)
    with open_database(cfg.db)() as session:
        try:
            user = add_user(session, name, password, admin)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    typer.echo(f"added {'admin' if user.is_admin else 'annotator'} {user.name!r}")


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="directory for rm_ranking/rm_pairs/sft .jsonl")],
    db: DbOption = None,
    recipe: RecipeOption = None,
    overrides: Overrides = None,
) -> None:
    """Write every session as reward-model rankings and pairs and SFT conversations."""
    from hcx.redteam.db import open_database
    from hcx.redteam.export import build_export, visible_sessions, write_export

    cfg = load_config(recipe, overrides, db=db)
    with open_database(cfg.db)() as session:
        export_ = build_export(visible_sessions(session, None), cfg.score_max)
    write_export(export_, out)
    typer.echo(json.dumps({"out": str(out), **export_.manifest()}, indent=1, ensure_ascii=False))
