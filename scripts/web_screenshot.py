"""The README's picture of the web page: serve the shipped checkpoint, use each panel once in Chromium
(Playwright), save a full-page screenshot.

    python scripts/web_screenshot.py --out docs/web-page.png
"""

from __future__ import annotations

import argparse
import shutil

from serving import served



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/web-page.png")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with served(args.port) as (url, server):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1000, "height": 1300})
            page.goto(url)
            page.wait_for_function("document.getElementById('status').textContent.startsWith('model:')")
            page.fill("#prompt", "plain white seven on dark blue")
            page.click("#generate-button")
            page.wait_for_function("document.querySelectorAll('#generated img').length === 8")
            box = page.locator("#canvas").bounding_box()
            page.mouse.move(box["x"] + 100, box["y"] + 60)
            page.mouse.down()
            for x, y in [(180, 60), (150, 140), (130, 230)]:               # a seven: the bar, then the stroke
                page.mouse.move(box["x"] + x, box["y"] + y, steps=12)
            page.mouse.up()
            page.click("#caption-button")
            page.wait_for_function("document.getElementById('caption-result').textContent.split(' ').length === 6")
            page.click("#chat-attach-drawing")
            page.wait_for_function("document.querySelectorAll('#chat-attachments img').length === 1")
            for prompt in ("<image> what digit is this ?", "<image> what comes next ?", "<image> make it a three ."):
                lines = page.locator("#chat-log .chat-line").count()
                page.fill("#chat-prompt", prompt)
                page.click("#chat-button")
                page.wait_for_function(f"document.querySelectorAll('#chat-log .chat-line').length === {lines + 2}")
            page.fill("#search-text", "seven on dark blue")
            page.fill("#search-k", "6")
            page.click("#search-button")
            page.wait_for_function("document.querySelectorAll('#search-hits figure').length === 6", timeout=120_000)
            page.click("#sample-button")
            page.wait_for_function("document.querySelectorAll('#samples figure').length === 8")
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
