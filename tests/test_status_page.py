"""Issue 19: `status --html PATH`, one self-contained page of the copy, rendered by a real browser
(Debian's headless Chromium, installed by .ci/run) and checked to show its charts."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import photo_bytes
from tests.local_cloud import jpeg_with_exif


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CLOUD_TRANSFER_REQUIRE_CHROMIUM"):
        pytest.fail("chromium is not installed (apt-get install chromium): .ci/run installs it")
    return found


def test_status_html_writes_a_self_contained_page_that_a_browser_renders_with_its_charts(env, tmp_path):
    for n in range(4):
        env.put(f"2019/{n}.jpg", jpeg_with_exif(f"2019:07:0{n + 1} 10:00:00"))
    for n in range(3):
        env.put(f"2021/{n}.jpg", jpeg_with_exif(f"2021:01:0{n + 1} 10:00:00"))
    env.put("misc/screenshot.png", photo_bytes("s", 3000))   # no date of its own: S3's upload time
    env.put("misc/notes.txt", b"not a photo")
    assert env.run().returncode == 0
    page = tmp_path / "copy.html"

    result = env.run("status", "--html", str(page))

    assert result.returncode == 0, result.stderr
    assert "done 8" in result.stdout and f"page written: {page.as_uri()}" in result.stdout
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(""", text)   # nothing fetched
    assert "<script" not in text and text.count("<svg") == 2
    assert "What to do next" in text and "Everything listed is copied" in text
    assert "1 × not a photo or video" in text or "not a photo or video" in text
    assert 'fill="#2b7bb9"' in text and 'fill="#e08a1e"' in text   # EXIF years, and the S3-dated one
    assert ">2019<" in text and ">2021<" in text

    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "copy.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=900,1500",
                    "--hide-scrollbars", page.as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    if os.environ.get("CLOUD_TRANSFER_KEEP_SCREENSHOT"):   # how docs/status-page.png is made
        shutil.copy(shot, os.environ["CLOUD_TRANSFER_KEEP_SCREENSHOT"])
    raw = Image.open(shot).convert("RGB").tobytes()
    pixels = [tuple(raw[i:i + 3]) for i in range(0, len(raw), 3)]
    not_white = sum(1 for p in pixels if p != (255, 255, 255)) / len(pixels)
    exif_blue = sum(1 for r, g, b in pixels if abs(r - 0x2b) < 12 and abs(g - 0x7b) < 12 and abs(b - 0xb9) < 12)
    assert not_white > 0.02, f"the page rendered nearly blank ({not_white:.1%} of pixels not white)"
    assert exif_blue > 500, "the charts' bars are not on the screenshot"
