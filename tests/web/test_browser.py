"""End to end in headless Chromium (Debian's /usr/bin/chromium driven by playwright).

Set FASTSAC_SCREENSHOTS=DIR to also save the screenshots used in docs/web.md.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from pathlib import Path

import pytest

from .conftest import running_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

if not Path(CHROMIUM).exists():
    pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _shot(page, name):
    d = os.environ.get("FASTSAC_SCREENSHOTS")
    if d:
        page.screenshot(path=str(Path(d) / f"web_{name}.png"), full_page=False)


def _page(browser, base):
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(base + "/")
    playwright_api.expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=30_000)
    return page, errors


def test_upload_view_mask_click_download(browser, tmp_path, demo_tif):
    import httpx

    from fastsac.web import create_app

    expect = playwright_api.expect
    app = create_app(tmp_path / "data", workers=0, n_sim=9)
    with running_server(app) as base:
        page, errors = _page(browser, base)
        page.set_input_files("#file-input", str(demo_tif))
        page.click("#upload-button")
        expect(page.locator("#atom-count")).to_have_text(re.compile(r"^\d+$"), timeout=120_000)
        iid = page.locator("#jobs tbody tr").first.get_attribute("data-id")
        api = httpx.get(f"{base}/api/images/{iid}").json()
        assert api["status"] == "done"
        assert int(page.text_content("#atom-count")) == api["n_atoms"] > 10
        expect(page.locator("#jobs tbody tr .n-atoms").first).to_have_text(str(api["n_atoms"]))
        expect(page.locator("#recal-px")).to_have_value(re.compile(r"^0\.0293"))

        # the mask: off, on, off again
        viewer = page.locator("#viewer")
        expect(viewer).to_have_attribute("data-mask", "off")
        page.check("#mask-toggle")
        expect(viewer).to_have_attribute("data-mask", "on", timeout=15_000)
        page.uncheck("#mask-toggle")
        expect(viewer).to_have_attribute("data-mask", "off")

        # click the first atom: its row appears
        atoms = httpx.get(f"{base}/api/images/{iid}/atoms.json").json()
        x, y = atoms["data"]["x_px"][0], atoms["data"]["y_px"][0]
        page.wait_for_timeout(800)  # let the viewer finish its opening animation
        pos = page.evaluate("([x, y]) => { const p = imageViewer.item().imageToViewerElementCoordinates("
                            "new OpenSeadragon.Point(x + 0.5, y + 0.5)); return [p.x, p.y]; }", [x, y])
        box = viewer.bounding_box()
        page.mouse.click(box["x"] + pos[0], box["y"] + pos[1])
        row = page.locator("#atom-row")
        expect(row).to_contain_text("x_px")
        assert f"{x:.4g}"[:5] in row.text_content()

        # plots from the saved result
        expect(page.locator("#plots img")).to_have_count(3, timeout=120_000)
        if os.environ.get("FASTSAC_SCREENSHOTS"):
            page.check("#mask-toggle")
            expect(viewer).to_have_attribute("data-mask", "on")
            page.wait_for_timeout(1000)
            page.evaluate("() => window.scrollTo(0, 0)")
            page.screenshot(path=str(Path(os.environ["FASTSAC_SCREENSHOTS"]) / "web_image.png"), full_page=True)
            page.uncheck("#mask-toggle")

        # download the zip and parse it
        with page.expect_download() as dl:
            page.click("#download-bundle")
        zf = zipfile.ZipFile(dl.value.path())
        rows = list(csv.DictReader(io.StringIO(zf.read("demo/atoms.csv").decode())))
        assert len(rows) == api["n_atoms"]
        assert "demo/summary.json" in zf.namelist() and "demo/overlay.png" in zf.namelist()
        assert errors == [], errors
        page.close()


def test_batch_upload_with_a_bad_file(browser, tmp_path, demo_tif):
    from fastsac.io import read, write_tiff
    from fastsac.web import create_app

    expect = playwright_api.expect
    m = read(demo_tif)
    second = tmp_path / "flipped.tif"
    write_tiff(second, m.data[::-1].copy(), pixel_size_nm=m.pixel_size_nm)
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00 not really a tiff")
    app = create_app(tmp_path / "data", workers=0, n_sim=0, n_perm=199)
    with running_server(app) as base:
        page, errors = _page(browser, base)
        page.fill("#batch-name", "sample B")  # a one-image batch to compare with
        page.set_input_files("#file-input", [str(second)])
        page.click("#upload-button")
        expect(page.locator("#jobs tr[data-status='done']")).to_have_count(1, timeout=120_000)
        page.fill("#batch-name", "sample A")
        page.set_input_files("#file-input", [str(demo_tif), str(bad), str(second)])
        page.click("#upload-button")
        expect(page.locator("#jobs tr[data-status='rejected']")).to_contain_text("broken.tif: ")
        expect(page.locator("#jobs tr[data-status='done']")).to_have_count(3, timeout=120_000)
        page.click("nav button[data-tab='batches']")
        page.locator("#batches tbody tr", has_text="sample A").locator("button").click()
        expect(page.locator("#batch-table tr")).to_have_count(3)
        expect(page.locator("#pooled")).to_contain_text("n_atoms", timeout=60_000)
        _shot(page, "batch")
        # compare the two batches (what `fastsac report A --compare B` computes)
        page.select_option("#compare-a", label="sample A")
        page.select_option("#compare-b", label="sample B")
        page.click("#compare-button")
        expect(page.locator("#compare-status a")).to_have_text("report", timeout=60_000)
        expect(page.locator("#compare-result")).to_contain_text("ks_p_value")
        expect(page.locator("#compare-result")).to_contain_text("n_perm")
        errors = [e for e in errors if "422" not in e]  # the rejected upload's response is logged
        assert errors == [], errors
        page.close()


def test_montage_and_live_views(browser, tmp_path, montage_out, demo_tif):
    import threading

    import httpx

    from fastsac.io import read, write_tiff
    from fastsac.live import watch
    from fastsac.web import create_app

    expect = playwright_api.expect
    frames_in, out = tmp_path / "in", tmp_path / "live"
    frames_in.mkdir()
    stop = threading.Event()
    th = threading.Thread(target=watch, args=(frames_in, out), daemon=True,
                          kwargs=dict(poll_s=0.2, settle_s=1.0, stop=stop))
    th.start()
    try:
        app = create_app(tmp_path / "data", workers=0, montages=[montage_out[0]], live=[out], sse_poll_s=0.3)
        with running_server(app) as base:
            page, errors = _page(browser, base)
            # montage: the viewer loads the atoms of its viewport (all of them at home zoom)
            page.click("nav button[data-tab='montages']")
            mid = httpx.get(f"{base}/api/montages").json()["montages"][0]["id"]
            page.select_option("#montage-select", mid)
            expect(page.locator("#montage-count")).to_have_text(str(len(montage_out[2].detections)),
                                                                timeout=30_000)
            page.check("#montage-mask-toggle")
            expect(page.locator("#montage-viewer")).to_have_attribute("data-mask", "on", timeout=15_000)
            _shot(page, "montage")
            # zoom in: fewer atoms, fetched for the new viewport
            page.evaluate("() => { montageViewer.viewer.viewport.zoomTo(4, null, true); }")
            expect(page.locator("#montage-count")).not_to_have_text(str(len(montage_out[2].detections)),
                                                                    timeout=15_000)
            # live: frames appear without reloading
            page.click("nav button[data-tab='live']")
            lid = httpx.get(f"{base}/api/live").json()["live"][0]["id"]
            page.select_option("#live-select", lid)
            expect(page.locator("#live-frames")).to_have_text("0", timeout=15_000)
            m = read(demo_tif)
            for k in range(2):
                tmp = frames_in / f"f{k}.tif.part"
                write_tiff(tmp, m.data if k == 0 else m.data[::-1].copy(), pixel_size_nm=m.pixel_size_nm)
                tmp.rename(frames_in / f"f{k}.tif")
                expect(page.locator("#live-frames")).to_have_text(str(k + 1), timeout=60_000)
            expect(page.locator("#live-table tr.frame-row")).to_have_count(2)
            if os.environ.get("FASTSAC_SCREENSHOTS"):  # the overlay is drawn in the background
                for _ in range(100):
                    if (out / "overlay.png").exists():
                        break
                    page.wait_for_timeout(100)
                page.evaluate("() => { const i = document.querySelector('#live-overlay'); i.src = i.src + '1'; }")
                page.wait_for_timeout(800)
                _shot(page, "live")
            assert [e for e in errors if "404" not in e] == []  # the first overlay may not exist yet
            page.close()
    finally:
        stop.set()
        th.join(30)
