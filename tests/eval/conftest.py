from __future__ import annotations

from pathlib import Path

import pytest

from hcx.eval.backend import HcxLM

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def hcx_lm(base_model_dir: Path) -> HcxLM:
    """The tiny pretrained export on the hcx engine in float32 (as lm-eval's hf backend loads it), shared
    by the tests of a session."""
    return HcxLM(pretrained=str(base_model_dir), batch_size=32, dtype="float32")


@pytest.fixture(scope="session")
def hub_fixture_dir() -> Path:
    """Hand-written items in hub schemas (HellaSwag, HAE-RAE), laid out like a data dir."""
    return FIXTURES / "hub_schema"
