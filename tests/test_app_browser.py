"""``sam3video app`` driven in a real browser (headless Chromium through Selenium and Debian's chromedriver; nothing
downloads a browser): on the demo clip with the shipped demo video model, load the page, prompt two concepts, drag
an exemplar box on frame 0, wait for the tracks, click a new object (positive, then negative), drag a box on
another new object, propagate, remove a track, export, download the files the page offers, check them against
``track --exemplars --edits`` with the files the page saved, and close the tab (its clip and folder are freed).

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
from sam3video.trackers.association.exemplars import load_exemplars

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

    def frame_offsets(self):
        """(the shown frame's <img>, a function from video pixel (x, y) to its offset from the image's centre)."""
        image = self.find("#frame img")
        natural_w, natural_h, box_w, box_h = self.driver.execute_script(
            "const r = arguments[0].getBoundingClientRect();"
            "return [arguments[0].naturalWidth, arguments[0].naturalHeight, r.width, r.height]", image)
        assert self.driver.execute_script("return getComputedStyle(arguments[0]).objectFit", image) == "scale-down"
        scale = min(box_w / natural_w, box_h / natural_h, 1)
        return image, lambda x, y: ((x + 0.5 - natural_w / 2) * scale, (y + 0.5 - natural_h / 2) * scale)

    def click_frame(self, x: float, y: float) -> None:
        """A click on video pixel (x, y) of the shown frame."""
        from selenium.webdriver.common.action_chains import ActionChains

        image, offset = self.frame_offsets()
        ActionChains(self.driver).move_to_element_with_offset(image, *offset(x, y)).click().perform()

    def drag_frame(self, x1: float, y1: float, x2: float, y2: float) -> None:
        """A drag from video pixel (x1, y1) to (x2, y2) on the shown frame: a box."""
        from selenium.webdriver.common.action_chains import ActionChains

        image, offset = self.frame_offsets()
        (ActionChains(self.driver).move_to_element_with_offset(image, *offset(x1, y1)).click_and_hold()
         .move_to_element_with_offset(image, *offset((x1 + x2) / 2, (y1 + y2) / 2))
         .move_to_element_with_offset(image, *offset(x2, y2)).release().perform())

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
    # an exemplar box around a yellow circle on frame 0, before tracking (the page shows frame 0)
    x, y, w, h = gt_box("yellow circle", 0)
    exemplar = (x - 2, y - 2, x + w + 2, y + h + 2)
    page.choose("target", "new yellow circle")
    page.drag_frame(*exemplar)
    page.wait_status("positive exemplar box 1 for 'yellow circle' on frame 0")
    assert "frame 0" in page.find("#exemplars").text
    page.find("#track").click()
    page.wait_status("tracked")
    assert "with 1 exemplar boxes" in page.status()
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
    # a new green triangle by a box dragged around one
    tx, ty, tw, th = gt_box("green triangle", 0)
    page.find("#drag label:nth-of-type(2)").click()  # object box
    page.choose("target", "new green triangle")
    page.drag_frame(tx - 2, ty - 2, tx + tw + 2, ty + th + 2)
    status = page.wait_status("object box on #")
    box_id = int(status.split("#")[1].split(",")[0])
    assert box_id == new_id + 1
    page.find("#propagate").click()
    page.wait_status("propagated")
    rows = {int(row[0]): row for row in page.table()}
    assert new_id in rows and int(rows[new_id][4]) > 1  # the clicked object is tracked beyond its frame
    assert box_id in rows and rows[box_id][1] == "green triangle"

    removed = min(i for i in rows if i not in (new_id, box_id))
    page.choose("remove_id", f"#{removed} {rows[removed][1]}")
    page.find("#remove").click()
    page.wait_status(f"removed #{removed}")
    assert removed not in {int(row[0]) for row in page.table()}

    page.find("#export").click()
    page.wait_status("exported")
    page.shot("exported")
    links = {href.rsplit("/", 1)[-1]: href for href in (a.get_attribute("href") for a in page.finds("#downloads a"))
             if href and "/file=" in href}
    for name in ("tracks.txt", "tracks.mots.txt", "summary.json", "edits.json", "exemplars.json", "overlay.mp4",
                 "run.zip"):
        assert name in links, sorted(links)
    got = {name: urllib.request.urlopen(links[name], timeout=30).read() for name in links}

    # the page's edits, as recorded: the two clicks where the test clicked, then the removal
    edits_path = tmp_path / "edits.json"
    edits_path.write_bytes(got["edits.json"])
    recorded = json.loads(got["edits.json"])
    assert [e.get("labels") for e in recorded] == [[1], [0], None, None]
    assert np.allclose(recorded[0]["points"][0], centre, atol=1.5) and recorded[0]["prompt"] == "yellow circle"
    assert recorded[0]["propagate"] is False and recorded[1]["obj_id"] == new_id and recorded[1]["propagate"] is False
    assert recorded[2]["obj_id"] == box_id and recorded[2]["prompt"] == "green triangle" and "propagate" not in recorded[2]
    assert np.allclose(recorded[2]["box"], (tx - 2, ty - 2, tx + tw + 2, ty + th + 2), atol=1.5)
    assert recorded[3] == {"remove": removed}
    exemplars_path = tmp_path / "exemplars.json"
    exemplars_path.write_bytes(got["exemplars.json"])
    (box,) = load_exemplars(exemplars_path)
    assert np.allclose(box.box, exemplar, atol=1.5) and box.positive and box.frame == 0 and box.prompt == PROMPTS[0]

    # ... and track --exemplars --edits with them writes the same tracks
    job = runs.TrackJob(source=str(DEMO / "video.mp4"), out_dir=tmp_path / "track", prompts=PROMPTS,
                        checkpoint="demo-video", edits=tuple(load_edits(edits_path)), render=False,
                        exemplars=(box,))
    runs.track(job, model)
    for name in ("tracks.txt", "tracks.mots.txt"):
        assert got[name] == (tmp_path / "track" / name).read_bytes(), name
    summary = json.loads(got["summary.json"])
    assert summary["prompts"] == list(PROMPTS) and len(summary["edits"]) == 4 and len(summary["exemplars"]) == 1

    # a closed tab frees its clip and its folder
    assert len(page_app.open_tabs) == 1 and any(page_app.workroot.iterdir())
    browser.get("about:blank")
    end = time.time() + 60
    while (page_app.open_tabs or any(page_app.workroot.iterdir())) and time.time() < end:
        time.sleep(0.2)
    assert not page_app.open_tabs and not any(page_app.workroot.iterdir())


def test_a_second_tab_waits_its_turn_and_sees_its_place(app, browser, tmp_path):
    """The model runs one request at a time for every tab: a second tab's Track, pressed while the first tab's runs,
    waits in the queue with its place shown, then runs; each tab has its own work until it is closed."""
    import re

    page_app, _ = app
    page = Page(browser, tmp_path)
    browser.get(page_app.local_url)
    first = browser.current_window_handle
    page.wait_status("video ready")
    page.find("#prompts textarea").send_keys(PROMPTS[0])
    page.find("#track").click()
    browser.switch_to.new_window("tab")
    browser.get(page_app.local_url)
    page.wait_status("video ready")
    page.find("#prompts textarea").send_keys(PROMPTS[1])
    page.find("#track").click()
    place, end = None, time.time() + 120
    while place is None and time.time() < end and "tracked" not in page.status():
        place = re.search(r"queue: ?\d+/\d+", browser.execute_script("return document.body.innerText"))
        time.sleep(0.1)
    assert place, "the second tab never showed its place in the queue"
    assert "tracked" in page.wait_status("tracked") and PROMPTS[1] in page.status()
    assert {row[1] for row in page.table()} <= {PROMPTS[1]}
    browser.switch_to.window(first)
    assert PROMPTS[0] in page.wait_status("tracked")
    assert len(page_app.open_tabs) == 2
    browser.get("about:blank")
    browser.switch_to.window(browser.window_handles[-1])
    browser.close()
    browser.switch_to.window(first)
    end = time.time() + 60
    while page_app.open_tabs and time.time() < end:
        time.sleep(0.2)
    assert not page_app.open_tabs
