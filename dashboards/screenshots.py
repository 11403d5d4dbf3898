"""Screenshots of a built dashboard for the README, in Debian's chromium through Playwright.

    vidablate dashboard --out site/ && python dashboards/screenshots.py site/ [TABLE]
"""

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright


def main(site: Path, table: str = "mechanisms_reversal", out: Path = Path(__file__).parent) -> None:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        sys.exit("needs chromium (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((site / "index.html").resolve().as_uri())
        page.screenshot(path=str(out / "status.png"))
        page.goto((site / "tables" / f"{table}.html").resolve().as_uri())
        page.screenshot(path=str(out / f"{table}.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])
