"""``hcx data``: the pretraining corpus builder (placeholder until issue 2 lands)."""

import typer

app = typer.Typer(no_args_is_help=True)
