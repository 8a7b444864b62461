"""The HTTP layer's fixtures: the engine's (a tiny model, real prompts) and a live server."""

from tests.infer.conftest import korean_prompts, korean_turns, model, one_thread  # noqa: F401
from tests.serve.live_server import guarded_server, live_server, served_model_dir  # noqa: F401
