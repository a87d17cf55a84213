"""The report's screenshots in the docs (docs/guides/img/report-*.png), one per section, taken
in headless Chromium from a real run's report:

    ./distill run && ./distill report
    .venv/bin/python scripts/report_screenshots.py runs/default/report.html docs/guides/img

The samples section is shown with one question's page open (the first question id in the
search box), as a reader would use it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import opened, screenshots  # noqa: E402  (tests/browser.py: the suite's launcher)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("report", type=Path)
    p.add_argument("out", type=Path)
    args = p.parse_args()
    with opened(args.report) as (page, errors):
        first = page.eval_on_selector("#s-results .qlink", "b => b.textContent")
        page.fill("#s-qid", first)
        page.wait_for_selector("#s-question h3")
        for path in screenshots(page, args.out):
            print(path)
    if errors:
        sys.exit(f"the page logged errors: {errors}")


if __name__ == "__main__":
    main()
