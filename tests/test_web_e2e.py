"""The page in real headless Chromium (Debian's, driven by its chromedriver) against a real uvicorn server.

Needs /usr/bin/chromium and /usr/bin/chromedriver (scripts/install-browser.sh installs both);
skipped with that reason when Chromium is absent. The server runs the scripted provider.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.expected_conditions import alert_is_present
from selenium.webdriver.support.ui import Select, WebDriverWait

from storyengine import streaming
from storyengine.errors import ProviderUnavailable
from storyengine.routing.instrument import current_step
from storyengine.schemas import Story
from storyengine.types import CompletionRequest
from storyengine.web.app import create_app
from test_chapters_read import chaptered
from test_quality import story_data
from test_web_api import Engines, numbered_script

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PREMISE = "A lighthouse keeper finds a message in a bottle addressed to her, dated tomorrow."
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,2600",
    # Anything but loopback goes to a closed local port: the page must need nothing from outside.
    "--proxy-server=http://127.0.0.1:9",
]
WAIT = 180  # seconds: the first run in a process renders every template once, slowly on a busy machine

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium; run scripts/install-browser.sh to install it"
)


@contextmanager
def serving(engines: Engines) -> Iterator[str]:
    """uvicorn on 127.0.0.1 (a free port) in a thread, serving the app on the scripted provider."""
    app = create_app(engine_factory=engines)
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


@pytest.fixture
def server() -> Iterator[str]:
    with serving(Engines(latency=0.02)) as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, condition: Any, message: str) -> Any:
    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, message)


def status_is(wanted: str) -> Any:
    return lambda d: d.find_element(By.ID, "status").get_attribute("data-status") == wanted


def test_write_watch_steer_and_export_in_chromium(server: str, browser: WebDriver, tmp_path: Path) -> None:
    browser.get(server + "/")
    wait_for(browser, lambda d: "embedded" in d.find_element(By.ID, "provider").text, "providers not listed")

    browser.find_element(By.ID, "premise").send_keys(PREMISE)
    browser.find_element(By.ID, "scenes").send_keys("3")
    browser.find_element(By.ID, "seed").send_keys("5")
    Select(browser.find_element(By.ID, "provider")).select_by_value("embedded")
    browser.find_element(By.ID, "start").click()

    wait_for(browser, status_is("running"), "the run never showed as running")
    wait_for(browser, lambda d: "#run=" in d.current_url, "the page did not open the run")
    wait_for(browser, status_is("done"), "the run did not finish on the page")
    run_id = browser.current_url.split("#run=")[1]
    story = httpx.get(f"{server}/api/runs/{run_id}").json()["story"]
    beats = story["plot"]["beats"]
    assert len(beats) == 3

    # the beats, as the API has them
    items = browser.find_elements(By.CSS_SELECTOR, "#beats li.beat")
    assert [item.find_element(By.TAG_NAME, "b").text for item in items] == [b["name"] for b in beats]
    # the tension arc: one point per beat, higher tension drawn higher
    points = browser.find_elements(By.CSS_SELECTOR, "#chart svg circle.beat-point")
    assert len(points) == len(beats)
    drawn = [(int(p.get_attribute("data-tension")), float(p.get_attribute("cy"))) for p in points]
    assert [t for t, _ in drawn] == [b["tension"] for b in beats]
    for (t1, y1), (t2, y2) in itertools.pairwise(drawn):
        assert (t1 > t2) == (y1 < y2) or t1 == t2
    # scenes set as a screenplay, evaluation and the per-call log
    scenes = browser.find_elements(By.CSS_SELECTOR, "#scenes-view .scene")
    assert len(scenes) == 3
    first_cue = scenes[0].find_element(By.CSS_SELECTOR, ".cue").text
    assert first_cue == story["scenes"][0]["dialogue"]["lines"][0]["speaker"].upper()
    # the scene's prose is on the page (the story a reader reads), and the quality report by code
    prose = story["scenes"][0]["prose"]
    assert prose and prose.split("\n\n")[0][:60] in scenes[0].find_element(By.CSS_SELECTOR, ".prose").text
    quality = browser.find_element(By.ID, "quality").text
    assert "premise coverage" in quality
    assert browser.find_element(By.ID, "overall").text == f"{story['evaluation']['overall']}/10"
    calls = browser.find_elements(By.CSS_SELECTOR, "#calls tr.call")
    assert len(calls) == len([c for c in story["meta"]["calls"] if c["kind"] == "call"]) > 0
    assert "embedded" in calls[0].text

    # an export, fetched by the page's own link
    link = browser.find_element(By.CSS_SELECTOR, '#exports a[data-format="markdown"]')
    markdown = browser.execute_async_script(
        "const done = arguments[1]; fetch(arguments[0]).then(r => r.text()).then(done);",
        link.get_attribute("href"),
    )
    assert f"## Scene 1: {story['scenes'][0]['scene']['title']}" in markdown
    book = browser.find_element(By.CSS_SELECTOR, '#exports a[data-format="epub"]')
    start = browser.execute_async_script(  # an EPUB starts with its stored mimetype entry
        "const done = arguments[1]; fetch(arguments[0]).then(r => r.arrayBuffer())"
        ".then(b => done(new TextDecoder().decode(new Uint8Array(b).slice(30, 58))));",
        book.get_attribute("href"),
    )
    assert book.text == "EPUB" and start == "mimetypeapplication/epub+zip"
    shot = tmp_path / "story.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000

    # steer: new dialogue for scene 1 makes version 2; compare it with version 1
    browser.find_element(By.CSS_SELECTOR, '[data-scene="0"] [data-action="regenerate-dialogue"]').click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#versions li")) == 2, "no version 2")
    wait_for(browser, status_is("done"), "steering did not finish on the page")
    Select(browser.find_element(By.ID, "compare-a")).select_by_value("1")
    Select(browser.find_element(By.ID, "compare-b")).select_by_value("2")
    browser.find_element(By.ID, "compare").click()
    summary = wait_for(browser, lambda d: d.find_element(By.ID, "compare-summary"), "no comparison shown")
    assert "dialogue of scene 1;" in summary.text
    assert browser.find_elements(By.CSS_SELECTOR, ".diff tr.replace, .diff tr.insert")
    versions = httpx.get(f"{server}/api/runs/{run_id}/versions").json()
    assert [v["label"] for v in versions] == ["generated", "regenerated dialogue of scene 1"]
    browser.save_screenshot(str(tmp_path / "compare.png"))


def test_a_failed_run_shows_what_it_finished_and_resumes(browser: WebDriver) -> None:
    healthy = threading.Event()
    script = numbered_script()

    drafts: list[int] = []

    def flaky(request: CompletionRequest) -> Any:
        # Two dialogues are made, then the server goes down at the third: a required step fails
        # (a failed evaluation would only leave a gap in a finished story).
        if request.component == "dialogue" and request.stage == "freeform" and not healthy.is_set():
            drafts.append(1)
            if len(drafts) > 2:
                return ProviderUnavailable("connection refused", provider="embedded")
        return script(request)

    with serving(Engines(flaky)) as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "premise").send_keys(PREMISE)
        browser.find_element(By.ID, "scenes").send_keys("3")
        browser.find_element(By.ID, "start").click()
        wait_for(browser, status_is("failed"), "the failure was not shown")
        assert "connection refused" in browser.find_element(By.ID, "run-error").text
        # what finished before the failure is on the page: the plot and the three scenes
        browser.refresh()  # a fresh page replays the run's events
        wait_for(browser, status_is("failed"), "the failed run was not reopened")
        wait_for(
            browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "circle.beat-point")) == 3, "no plot"
        )
        assert len(browser.find_elements(By.CSS_SELECTOR, "#scenes-view .scene .cue")) >= 3
        healthy.set()
        browser.find_element(By.ID, "resume").click()
        wait_for(browser, status_is("done"), "the resumed run did not finish")
        assert browser.find_element(By.ID, "overall").text.endswith("/10")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#versions li")) == 1
        assert not browser.find_element(By.ID, "resume").is_displayed()


def test_a_restarted_server_lists_and_opens_earlier_runs(browser: WebDriver) -> None:
    """Runs live in the data directory: a new server (same data dir) lists and opens them all."""
    with serving(Engines()) as url:
        run_id = httpx.post(f"{url}/api/runs", json={"premise": PREMISE, "scenes": 3, "seed": 5}).json()["id"]
        httpx.get(f"{url}/api/runs/{run_id}/events", timeout=WAIT)  # the stream ends when the run is done
        job = httpx.post(f"{url}/api/runs/{run_id}/scenes/0/dialogue/regenerate", json={"seed": 1}).json()
        httpx.get(f"{url}/api/runs/{run_id}/events", params={"after": job["after"]}, timeout=WAIT)
        stories = [httpx.get(f"{url}/api/runs/{run_id}/versions/{n}").json()["story"] for n in (1, 2)]

    async def direct() -> str:  # a run made with the engine API, as `storyengine generate` makes it
        async with Engines()(None) as engine:
            story = await engine.generate("A clockmaker repairs time itself.", scenes=2, seed=3)
        return str(story.meta["run_id"])

    other_id = asyncio.run(direct())

    with serving(Engines()) as url:
        browser.get(url + "/")
        listed = lambda d: d.find_elements(By.CSS_SELECTOR, "#runs li[data-run]")  # noqa: E731
        wait_for(browser, lambda d: len(listed(d)) == 2, "the earlier runs were not listed")
        assert {li.get_attribute("data-run") for li in listed(browser)} == {run_id, other_id}

        browser.find_element(By.CSS_SELECTOR, f'#runs li[data-run="{run_id}"]').click()
        wait_for(browser, lambda d: d.current_url.endswith(f"#run={run_id}"), "the run did not open")
        wait_for(browser, status_is("done"), "the reopened run is not shown as done")
        wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#versions li")) == 2, "no versions")
        first_line = (
            "const e = document.querySelector('[data-scene=\"0\"] .speech'); return e && e.textContent;"
        )
        cue = lambda d: d.execute_script(first_line)  # noqa: E731  (read at once: the page re-renders)
        wait_for(
            browser, lambda d: cue(d) == stories[1]["scenes"][0]["dialogue"]["lines"][0]["text"], "not v2"
        )
        browser.find_element(By.CSS_SELECTOR, '#versions li[data-version="1"] button').click()
        wait_for(
            browser, lambda d: cue(d) == stories[0]["scenes"][0]["dialogue"]["lines"][0]["text"], "not v1"
        )

        browser.find_element(By.CSS_SELECTOR, f'#runs li[data-run="{other_id}"]').click()
        wait_for(browser, lambda d: d.current_url.endswith(f"#run={other_id}"), "the API run did not open")
        wait_for(
            browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#scenes-view .scene")) == 2, "no story"
        )
        assert len(browser.find_elements(By.CSS_SELECTOR, "#versions li")) == 1


def test_apply_suggestions_and_edit_the_bible_in_chromium(browser: WebDriver, tmp_path: Path) -> None:
    from storyengine.config import parse_settings
    from test_revision import BETTER, script
    from test_web_api import SETTINGS

    engines = Engines(script(["Scene 2"], BETTER), latency=0.02)
    engines.settings = parse_settings(SETTINGS.replace("8192}", "8192, profile: standard}"), source="t.yaml")
    with serving(engines) as server:
        browser.get(server + "/")
        browser.find_element(By.ID, "premise").send_keys(PREMISE)
        browser.find_element(By.ID, "scenes").send_keys("3")
        browser.find_element(By.ID, "seed").send_keys("5")
        browser.find_element(By.ID, "start").click()
        wait_for(browser, lambda d: "#run=" in d.current_url, "the page did not open the run")
        wait_for(browser, status_is("done"), "the run did not finish on the page")
        run_id = browser.current_url.split("#run=")[1]

        # Apply suggestions: version 2 revises scene 2 and says what it did not apply
        browser.find_element(By.CSS_SELECTOR, '[data-action="apply-suggestions"]').click()
        wait_for(
            browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#versions li")) == 2, "no version 2"
        )
        wait_for(browser, status_is("done"), "the revision did not finish on the page")
        revision = wait_for(browser, lambda d: d.find_element(By.ID, "revision"), "no revision shown")
        wait_for(
            browser, lambda d: "rewrote scene(s) 2" in revision.text, "the revision does not say what it did"
        )
        assert "Not applied, it names nothing in the story" in revision.text
        rows = browser.find_elements(By.CSS_SELECTOR, "#revision-measures tbody tr")
        assert len(rows) > 10 and rows[0].get_attribute("data-measure") == "repeated sentences %"
        v2 = httpx.get(f"{server}/api/runs/{run_id}/versions/2").json()["story"]
        assert "outside, the" in v2["scenes"][1]["prose"]

        # Edit the bible's setting: the page says every scene will be regenerated, then does it
        browser.find_element(By.CSS_SELECTOR, '[data-action="edit-bible"]').click()
        setting = browser.find_element(By.CSS_SELECTOR, '#bible input[aria-label="setting"]')
        setting.clear()
        setting.send_keys("A lighthouse on a northern island, one stormy autumn.")
        browser.find_element(By.CSS_SELECTOR, '[data-action="save-bible"]').click()
        alert = wait_for(browser, alert_is_present(), "no confirmation asked")
        assert alert.text.startswith("This regenerates scene(s) 1, 2, 3.")
        alert.accept()
        wait_for(
            browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#versions li")) == 3, "no version 3"
        )
        wait_for(browser, status_is("done"), "the bible edit did not finish on the page")
        wait_for(
            browser, lambda d: "northern island" in d.find_element(By.ID, "bible").text, "bible not shown"
        )
        browser.save_screenshot(str(tmp_path / "revision.png"))


def test_a_story_with_chapters_shows_them_as_folded_blocks(
    server: str, browser: WebDriver, tmp_path: Path
) -> None:
    """The page is given a chaptered story as a version's would be (the next test writes one)."""
    browser.get(server + "/")
    wait_for(browser, lambda d: d.execute_script("return typeof chapterBlocks === 'function'"), "no story.js")
    show = "state.story = arguments[0]; render();"
    story = chaptered()
    browser.execute_script(show, story.model_dump(mode="json"))

    blocks = browser.find_elements(By.CSS_SELECTOR, "#scenes-view > details.chapter")
    summaries = [b.find_element(By.TAG_NAME, "summary").text for b in blocks]
    assert summaries == [
        "Chapter 1: Arrival — 2 scenes",
        "Chapter 2: The Storm — 2 scenes",
        "Chapter 3: Dawn — 2 scenes",
    ]
    assert [b.get_attribute("open") is not None for b in blocks] == [True, False, False]
    held = [
        [s.get_attribute("data-scene") for s in b.find_elements(By.CSS_SELECTOR, ".scene")] for b in blocks
    ]
    assert held == [["0", "1"], ["2", "3"], ["4", "5"]]  # each chapter's scenes, as numbered in the story
    first = blocks[0].find_elements(By.CSS_SELECTOR, ".scene")
    later = blocks[1].find_elements(By.CSS_SELECTOR, ".scene")
    assert first[0].find_element(By.CSS_SELECTOR, "h4").text == "Scene 1: The Stairs"
    assert first[0].find_element(By.CSS_SELECTOR, ".cue").text == "ANA"
    assert not later[0].is_displayed()  # folded
    blocks[1].find_element(By.TAG_NAME, "summary").click()
    assert (
        later[0].is_displayed() and later[0].find_element(By.CSS_SELECTOR, "h4").text == "Scene 3: Midnight"
    )
    browser.save_screenshot(str(tmp_path / "chapters.png"))

    browser.execute_script(show, story.model_dump(mode="json"))  # a re-render keeps what the reader opened
    blocks = browser.find_elements(By.CSS_SELECTOR, "#scenes-view > details.chapter")
    assert [b.get_attribute("open") is not None for b in blocks] == [True, True, False]

    browser.execute_script(show, Story.model_validate(story_data()).model_dump(mode="json"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#scenes-view details")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#scenes-view > .scene")) == 3  # as before chapters


def test_a_long_story_is_asked_for_on_the_page_and_read_in_its_chapters(
    server: str, browser: WebDriver
) -> None:
    browser.get(server + "/")
    wait_for(browser, lambda d: "embedded" in d.find_element(By.ID, "provider").text, "providers not listed")
    browser.find_element(By.ID, "premise").send_keys(PREMISE)
    browser.find_element(By.ID, "chapters").send_keys("2")
    browser.find_element(By.ID, "scenes-per-chapter").send_keys("2")
    browser.find_element(By.ID, "seed").send_keys("4")
    browser.find_element(By.ID, "start").click()
    wait_for(browser, status_is("done"), "the long story did not finish")
    blocks = browser.find_elements(By.CSS_SELECTOR, "#scenes-view > details.chapter")
    summaries = [b.find_element(By.TAG_NAME, "summary").text for b in blocks]
    assert len(blocks) == 2 and all(s.endswith("— 2 scenes") for s in summaries), summaries
    held = [
        [s.get_attribute("data-scene") for s in b.find_elements(By.CSS_SELECTOR, ".scene")] for b in blocks
    ]
    assert held == [["0", "1"], ["2", "3"]]


def test_the_draft_grows_on_the_page_then_stop_keeps_what_is_done_and_resume_finishes(
    browser: WebDriver,
) -> None:
    """Scene 1's draft is written word by word and held before its end (scenes 2 and 3 wait too):
    the page shows it growing in the scene's card; Stop ends the run, the page says what was
    kept; Resume writes the rest."""
    released = threading.Event()
    script = numbered_script()

    async def slow(request: CompletionRequest) -> Any:
        step = current_step.get()
        if (
            step in ("scene.0", "scene.1", "scene.2")
            and request.stage == "freeform"
            and not released.is_set()
        ):
            if step == "scene.0":  # written slowly, and not finished while the run is held
                for word in re.findall(r"\S*\s*", str(script(request)))[:-2]:
                    streaming.delta(word)
                    await asyncio.sleep(0.05)
            await asyncio.to_thread(released.wait)  # a stop cancels the wait (the thread ends on release)
        return script(request)

    with serving(Engines(slow, latency=0.001)) as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "premise").send_keys(PREMISE)
        browser.find_element(By.ID, "scenes").send_keys("3")
        browser.find_element(By.ID, "seed").send_keys("5")
        browser.find_element(By.ID, "start").click()
        wait_for(browser, status_is("running"), "the run never showed as running")
        live = (
            "const e = document.querySelector('[data-scene=\"0\"] pre.draft-live');"
            " return e && e.textContent;"
        )
        first = wait_for(browser, lambda d: d.execute_script(live), "scene 1's draft is not shown as written")
        wait_for(
            browser,
            lambda d: len(d.execute_script(live) or "") > len(first),
            "the draft did not grow on the page",
        )
        assert browser.find_element(By.ID, "stop").is_displayed()
        browser.find_element(By.ID, "stop").click()
        wait_for(browser, status_is("stopped"), "the stop was not shown")
        said = browser.find_element(By.ID, "status-text").text
        assert said.startswith("Stopped: plot") and said.endswith("kept; resume to continue"), said
        assert not browser.find_elements(By.CSS_SELECTOR, "pre.draft-live")  # an unfinished draft is void
        assert not browser.find_element(By.ID, "stop").is_displayed()
        run_id = browser.current_url.split("#run=")[1]
        assert httpx.get(f"{url}/api/runs/{run_id}").json()["status"] == "failed"

        released.set()
        browser.find_element(By.ID, "resume").click()
        wait_for(browser, status_is("done"), "the resumed run did not finish")
        story = httpx.get(f"{url}/api/runs/{run_id}").json()["story"]
        scenes = browser.find_elements(By.CSS_SELECTOR, "#scenes-view .scene")
        assert len(scenes) == 3 and not browser.find_elements(By.CSS_SELECTOR, "pre.draft-live")
        prose = story["scenes"][0]["prose"].split("\n\n")[0][:60]
        assert prose in scenes[0].find_element(By.CSS_SELECTOR, ".prose").text
