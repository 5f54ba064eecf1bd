"""A PNG of a report's top as headless Chromium shows it at 1400 px (the README's picture).

    .venv/bin/python scripts/report_screenshot.py runs/smoke/report/index.html docs/report-top.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cdp import Browser  # noqa: E402


def screenshot(report: Path, out: Path, width: int = 1400, height: int = 1000) -> list[str]:
    """Save the top `height` pixels; returns the page's console errors (none expected)."""
    with Browser(width, height) as browser:
        page = browser.page()
        page.open(f"file://{report.resolve()}")
        page.wait_for("document.getElementById('ab-status') && "
                      "document.getElementById('ab-status').textContent.includes('page 1')")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(out, clip_height=height)
        return page.errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("report", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--height", type=int, default=1000)
    args = ap.parse_args()
    errors = screenshot(args.report, args.out, height=args.height)
    print(f"{args.out}: {args.out.stat().st_size} bytes" + (f"; console errors: {errors}" if errors else ""))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
