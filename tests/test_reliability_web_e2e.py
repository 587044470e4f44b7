"""The page in real headless Chromium against a server that requires a token (as `storyengine serve
--host 0.0.0.0` does): opened with ?token=, everything works; opened without, it says why not.
And on loopback: the page works within its own Content-Security-Policy (every POST it sends is
JSON), and a run whose server was killed is offered for resume and resumes."""

from __future__ import annotations

import asyncio
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
from test_trust_web import stopped_run
from test_web_api import Engines
from test_web_e2e import CHROMIUM, browser, serving, status_is, wait_for

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


def test_the_page_works_under_its_content_security_policy(browser: WebDriver) -> None:
    """The page's script, styles and every kind of POST (a body-less restore too) within its own policy."""
    with serving(Engines(latency=0.02)) as url:
        assert "script-src 'self'" in httpx.get(f"{url}/").headers["content-security-policy"]
        browser.get(f"{url}/")
        browser.execute_script(
            "window.violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " (e) => window.violations.push(`${e.violatedDirective} ${e.blockedURI}`));"
        )
        browser.find_element(By.ID, "premise").send_keys(PREMISE)
        browser.find_element(By.ID, "scenes").send_keys("2")
        browser.find_element(By.ID, "start").click()
        wait_for(browser, status_is("done"), "the run did not finish on the page")
        score = browser.find_element(By.CSS_SELECTOR, "#evaluation .score")
        bar = score.find_element(By.CSS_SELECTOR, ".bar span")
        share = browser.execute_script(
            "const [bar] = arguments; return bar.offsetWidth / bar.parentElement.clientWidth;", bar
        )
        assert abs(share - int(score.find_element(By.TAG_NAME, "b").text) / 10) < 0.02  # its width applied
        browser.find_element(By.CSS_SELECTOR, '[data-action="regenerate-scene"]').click()
        wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#versions li")) == 2, "no v2")
        wait_for(browser, status_is("done"), "the steering job did not finish")
        restore = browser.find_element(By.CSS_SELECTOR, '#versions li[data-version="1"] button:last-child')
        assert restore.text == "Restore"
        restore.click()
        wait_for(
            browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#versions li")) == 3, "not restored"
        )
        assert browser.find_element(By.ID, "run-error").text == ""
        assert browser.execute_script("return window.violations") == []


def test_a_run_whose_server_was_killed_is_resumed_from_the_page(browser: WebDriver) -> None:
    engines = Engines(latency=0.02)
    run_id = asyncio.run(stopped_run(engines))  # left `running` by a process that is gone
    with serving(engines) as url:
        browser.get(f"{url}/#run={run_id}")
        resume = wait_for(
            browser,
            lambda d: (
                d.find_element(By.ID, "resume") if d.find_element(By.ID, "resume").is_displayed() else None
            ),
            "no Resume button for the run of a dead process",
        )
        assert "stopped" in browser.find_element(By.ID, "run-error").text
        resume.click()
        wait_for(browser, status_is("done"), "the resumed run did not finish")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#versions li")) == 1
        run = httpx.get(f"{url}/api/runs/{run_id}").json()
        assert run["status"] == "done" and run["orphaned"] is False
