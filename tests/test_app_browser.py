"""``sam3video app`` driven in a real browser (headless Chromium through Selenium and Debian's chromedriver; nothing
downloads a browser): on the demo clip with the shipped demo video model, load the page, prompt two concepts, wait
for the tracks, click a new object (positive, then negative), propagate, remove a track, export, download the
files the page offers, check them against ``track --edits`` with the edits file the page saved, and close the tab
(its clip and folder are freed).

Needs ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``; ``.ci/run`` installs them).
With ``SAM3VIDEO_SCREENSHOTS=DIR`` the page's screenshots are kept there (``docs/app-*.png`` come from it)."""

import json
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from sam3video import run as runs
from sam3video.export.edits import load_edits

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.browser  # make test-browser (.ci/run runs it after make test)
DEMO = Path(__file__).resolve().parent.parent / "demos" / "shapes"
PROMPTS = ("yellow circle", "green triangle")


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM and CHROMEDRIVER, "the page test needs chromium and chromedriver: apt-get install chromium " \
                                      "chromium-driver"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1700"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def app():
    from sam3video.app import load_app_model, serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model, name = load_app_model(None, "cpu")
    page = serve([str(DEMO / "video.mp4")], host="127.0.0.1", port=port, block=False, model=model)
    yield page, model
    page.close()


class Page:
    def __init__(self, driver, shots: Path):
        self.driver, self.shots = driver, shots

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def status(self) -> str:
        found = self.finds("#status")  # none while the page loads
        return found[0].text if found else ""

    def wait_status(self, words: str, timeout: float = 600) -> str:
        end = time.time() + timeout
        while time.time() < end:
            text = self.status()
            if words in text:
                return text
            assert "Error" not in text, text
            time.sleep(0.3)
        raise AssertionError(f"no {words!r} after {timeout} s; status: {self.status()!r}")

    def choose(self, dropdown: str, label: str) -> None:
        self.find(f"#{dropdown} input").click()
        options = [o for o in self.finds("li[role=option]") if o.get_attribute("aria-label") == label]
        assert options, f"{label!r} not among {[o.get_attribute('aria-label') for o in self.finds('li[role=option]')]}"
        options[0].click()

    def click_frame(self, x: float, y: float) -> None:
        """A click on video pixel (x, y) of the shown frame."""
        from selenium.webdriver.common.action_chains import ActionChains

        image = self.find("#frame img")
        natural_w, natural_h, shown_w, shown_h = self.driver.execute_script(
            "const r = arguments[0].getBoundingClientRect();"
            "return [arguments[0].naturalWidth, arguments[0].naturalHeight, r.width, r.height]", image)
        dx, dy = (x + 0.5) * shown_w / natural_w - shown_w / 2, (y + 0.5) * shown_h / natural_h - shown_h / 2
        ActionChains(self.driver).move_to_element_with_offset(image, dx, dy).click().perform()

    def table(self) -> list[list[str]]:
        """The table of tracks once it has stopped changing (it renders after the status line)."""
        last = None
        for _ in range(40):
            rows = [[c.get_attribute("textContent").strip() for c in row.find_elements("css selector", "[role=gridcell]")]
                    for row in self.finds("#tracks [role=row][data-index]")]  # Gradio's virtual rows
            rows = [row for row in rows if any(row)]
            if rows == last:
                return rows
            last = rows
            time.sleep(0.5)
        return last

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"app-{name}.png"))


def gt_box(name: str, frame: int) -> tuple[float, float, float, float]:
    """The first ground-truth box (x, y, w, h) of ``name`` on 0-based ``frame`` of the demo clip."""
    for line in (DEMO / "gt" / name.replace(" ", "_") / "gt.txt").read_text().splitlines():
        values = line.split(",")
        if int(values[0]) == frame + 1:
            return tuple(float(v) for v in values[2:6])
    raise AssertionError(f"no {name} on frame {frame}")


def test_the_page_tracks_clicks_removes_and_exports_what_track_writes(app, browser, tmp_path):
    page_app, model = app
    shots = Path(os.environ.get("SAM3VIDEO_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page = Page(browser, shots)
    browser.get(page_app.local_url)
    page.wait_status("video ready")
    assert page.find("#info").text.startswith("video.mp4: 320x240, 30 fps, 120 frames")

    page.find("#prompts textarea").send_keys("\n".join(PROMPTS))
    page.find("#track").click()
    page.wait_status("tracked")
    tracked = page.table()
    assert tracked and {row[1] for row in tracked} <= set(PROMPTS)
    page.shot("tracked")

    # a new yellow circle by a positive click at the centre of one, then a negative click beside it
    x, y, w, h = gt_box("yellow circle", 0)
    centre = (x + w / 2, y + h / 2)
    page.choose("target", "new yellow circle")
    page.click_frame(*centre)
    status = page.wait_status("positive click on #")
    new_id = int(status.split("#")[1].split()[0])
    assert new_id == max(int(row[0]) for row in tracked) + 1
    page.find("#label label:nth-of-type(2)").click()  # negative
    page.click_frame(x + w + 6, y + h / 2)
    page.wait_status(f"negative click on #{new_id}")
    page.shot("clicked")
    page.find("#propagate").click()
    page.wait_status("propagated")
    rows = {int(row[0]): row for row in page.table()}
    assert new_id in rows and int(rows[new_id][4]) > 1  # the clicked object is tracked beyond its frame

    removed = min(i for i in rows if i != new_id)
    page.choose("remove_id", f"#{removed} {rows[removed][1]}")
    page.find("#remove").click()
    page.wait_status(f"removed #{removed}")
    assert removed not in {int(row[0]) for row in page.table()}

    page.find("#export").click()
    page.wait_status("exported")
    page.shot("exported")
    links = {href.rsplit("/", 1)[-1]: href for href in (a.get_attribute("href") for a in page.finds("#downloads a"))
             if href and "/file=" in href}
    for name in ("tracks.txt", "tracks.mots.txt", "summary.json", "edits.json", "overlay.mp4", "run.zip"):
        assert name in links, sorted(links)
    got = {name: urllib.request.urlopen(links[name], timeout=30).read() for name in links}

    # the page's edits, as recorded: the two clicks where the test clicked, then the removal
    edits_path = tmp_path / "edits.json"
    edits_path.write_bytes(got["edits.json"])
    recorded = json.loads(got["edits.json"])
    assert [e.get("labels") for e in recorded] == [[1], [0], None]
    assert np.allclose(recorded[0]["points"][0], centre, atol=1.5) and recorded[0]["prompt"] == "yellow circle"
    assert recorded[0]["propagate"] is False and recorded[1]["obj_id"] == new_id and "propagate" not in recorded[1]
    assert recorded[2] == {"remove": removed}

    # ... and track --edits with them writes the same tracks
    job = runs.TrackJob(source=str(DEMO / "video.mp4"), out_dir=tmp_path / "track", prompts=PROMPTS,
                        checkpoint="demo-video", edits=tuple(load_edits(edits_path)), render=False)
    runs.track(job, model)
    for name in ("tracks.txt", "tracks.mots.txt"):
        assert got[name] == (tmp_path / "track" / name).read_bytes(), name
    summary = json.loads(got["summary.json"])
    assert summary["prompts"] == list(PROMPTS) and len(summary["edits"]) == 3

    # a closed tab frees its clip and its folder
    assert len(page_app.open_tabs) == 1 and any(page_app.workroot.iterdir())
    browser.get("about:blank")
    end = time.time() + 60
    while (page_app.open_tabs or any(page_app.workroot.iterdir())) and time.time() < end:
        time.sleep(0.2)
    assert not page_app.open_tabs and not any(page_app.workroot.iterdir())
