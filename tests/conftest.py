"""Shared pytest configuration.

Browser tests (pytest-playwright) drive the Debian ``chromium`` package, never a browser
downloaded by ``playwright install``: the launch fixtures below point Playwright at
/usr/bin/chromium with headless, sandbox-free flags that work in containers and CI.
"""
from __future__ import annotations

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


@pytest.fixture
def one_thread():
    """torch on one thread for the test (small models: faster, and fair to a parallel job)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

