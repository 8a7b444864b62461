"""Headless Chromium for the page tests: the system's browser, never one Playwright downloads.

``HCX_CHROMIUM`` names the executable; otherwise ``chromium`` (Debian's package, which
``.ci/run`` installs) is looked up on PATH.
"""

from __future__ import annotations

import os
import shutil

from playwright.sync_api import Browser, Playwright

# Without the background-networking flags Chromium keeps dialling out of a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_path() -> str:
    path = os.environ.get("HCX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise FileNotFoundError(
            "no Chromium found: install Debian's chromium or set HCX_CHROMIUM to its path"
        )
    return path


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
