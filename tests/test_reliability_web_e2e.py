"""The page in real headless Chromium against a server that requires a token (as `storyengine serve
--host 0.0.0.0` does): opened with ?token=, everything works; opened without, it says why not."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from storyengine.web.app import create_app
from test_web_api import Engines
from test_web_e2e import CHROMIUM, browser, status_is, wait_for

__all__ = ["browser"]  # the fixture, shared with test_web_e2e

TOKEN = "e2e-t0ken-9f8e7d6c5b4a"
PREMISE = "A lighthouse keeper finds a message in a bottle addressed to her, dated tomorrow."

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium; run scripts/install-browser.sh to install it"
)


@contextmanager
def serving_with_token(engines: Engines) -> Iterator[str]:
    app = create_app(engine_factory=engines, token=TOKEN)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not web.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        web.should_exit = True
        thread.join(timeout=30)
        listener.close()


def test_the_page_opened_with_its_token_writes_watches_and_exports(browser: WebDriver) -> None:
    engines = Engines(latency=0.02)
    with serving_with_token(engines) as url:
        assert httpx.get(f"{url}/api/runs").status_code == 401
        browser.get(f"{url}/?token={TOKEN}")
        wait_for(
            browser, lambda d: "embedded" in d.find_element(By.ID, "provider").text, "providers not listed"
        )
        browser.find_element(By.ID, "premise").send_keys(PREMISE)
        browser.find_element(By.ID, "scenes").send_keys("2")
        browser.find_element(By.ID, "start").click()
        wait_for(browser, lambda d: "#run=" in d.current_url, "the page did not open the run")
        wait_for(browser, status_is("done"), "the run did not finish on the page (event stream refused?)")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#scenes-view .scene")) == 2
        link = browser.find_element(By.CSS_SELECTOR, '#exports a[data-format="markdown"]').get_attribute(
            "href"
        )
        assert link is not None and f"token={TOKEN}" in link
        assert httpx.get(link).status_code == 200
        run_id = browser.current_url.split("#run=")[1]
        assert (
            httpx.get(f"{url}/api/runs/{run_id}", headers={"Authorization": f"Bearer {TOKEN}"}).json()[
                "status"
            ]
            == "done"
        )


def test_the_page_without_its_token_says_what_is_missing(browser: WebDriver) -> None:
    engines = Engines(latency=0.02)
    with serving_with_token(engines) as url:
        browser.get(f"{url}/")
        error = wait_for(
            browser,
            lambda d: d.find_element(By.ID, "form-error").text or None,
            "no error shown for the missing token",
        )
        assert "token" in error
        assert engines.providers == []  # nothing was built, nothing ran
