"""The html report a person navigates: a table of contents whose links resolve, sortable
tables, no network; and, where Chromium is installed, that a real browser renders it,
sorts a table on a click and logs no console error."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from initbench.config.spec import build_spec
from initbench.reporting import generate
from initbench.reporting.render.html import SORTABLE, TOC_ID
from initbench.results import store
from initbench.sweep.train import execute_run

SPEC = """\
data: {name: synthetic, n_train: 128, n_test: 64}
model: {arch: mlp, width: 16, activation: relu}
train: {steps: 4, log_every: 2, batch_size: 32}
grid: {model.init: [he_normal, xavier_normal], model.depth: [2, 6]}
"""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class _Elements(HTMLParser):
    """Every start tag's name and attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def elements(text: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Elements()
    parser.feed(text)
    return parser.tags


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    for name in ("relu_a", "relu_b"):  # two experiments: the contents must tell them apart
        spec = build_spec({"name": name, **yaml.safe_load(SPEC)}, name, SPEC)
        store.write_spec(root / name, SPEC)
        for run in spec.runs:
            store.write_run(root / name, execute_run(run.as_dict(), name, threads=1))
    out = root / "report.html"
    generate(root, fmt="html", out=out)
    return out


def test_every_contents_link_resolves_to_an_id(report: Path):
    tags = elements(report.read_text(encoding="utf-8"))
    ids = [attrs["id"] for _, attrs in tags if "id" in attrs]
    assert len(ids) == len(set(ids))
    assert ("nav", {"id": TOC_ID}) in tags
    links = [attrs["href"] for tag, attrs in tags if tag == "a" and "href" in attrs]
    assert links and all(link.startswith("#") and link[1:] in ids for link in links)
    for experiment in ("relu-a", "relu-b"):  # an anchor per experiment, table and figure
        assert f"#{experiment}" in links
        assert f"#{experiment}-outcome" in links and f"#{experiment}-heatmaps" in links
    tables = [attrs for tag, attrs in tags if tag == "table"]
    assert all(f"#{attrs['id']}" in links for attrs in tables)


def test_every_table_is_sortable_and_every_figure_has_a_caption(report: Path):
    text = report.read_text(encoding="utf-8")
    tags = elements(text)
    tables = [attrs for tag, attrs in tags if tag == "table"]
    assert tables and all(attrs.get("class") == SORTABLE for attrs in tables)
    assert "<script>" in text and "ibSort" in text
    captions = re.findall(r"<figcaption><b>([^<]+)\.</b> ([^<]+)</figcaption>", text)
    assert len(captions) == text.count("<figure ") >= 10
    assert not any("heatmap_" in title or "_" in title.split()[0] for title, _ in captions)


def test_nothing_is_fetched_from_the_network(report: Path):
    text = report.read_text(encoding="utf-8")
    outside_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert not re.search(r"(https?:|ftp:)?//[a-z0-9]", outside_images, re.I)
    assert "<link" not in text and "@import" not in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)


def _number(text: str) -> float:
    """What the inline script sorts a numeric cell by (the mean of 'm ± s')."""
    match = re.match(r"\(?([-+]?[\d.]+(?:e[-+]?\d+)?)", text.replace(",", ""))
    return float(match.group(1)) if match else float("inf")


def chromium(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``url`` with a throw-away profile; stderr carries the console."""
    with tempfile.TemporaryDirectory() as profile:
        command = [CHROMIUM or "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        command += ["--enable-logging=stderr", "--v=0", *args, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_renders_it_sorts_on_a_click_and_logs_no_error(report: Path):
    # A copy of the report that clicks the step-0 table's 'fwd factor' header once and
    # writes the column it then shows into the DOM (the report itself is unchanged).
    probe = """<script>
var th = Array.prototype.find.call(document.querySelectorAll("table.sortable th"),
  function (h) { return h.textContent === "fwd factor"; });
th.click();
var rows = th.closest("table").tBodies[0].rows;
document.body.setAttribute("data-sorted", Array.prototype.map.call(rows,
  function (r) { return r.cells[th.cellIndex].textContent; }).join("|"));
</script></body>"""
    page = report.with_name("probe.html")
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", probe))
    result = chromium(page.as_uri(), "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []  # no JS error or warning
    dom = result.stdout
    assert f'<nav id="{TOC_ID}">' in dom and dom.count(f'class="{SORTABLE}"') >= 6
    assert 'aria-sort="ascending">fwd factor' in dom
    sorted_cells = re.search(r'data-sorted="([^"]*)"', dom).group(1).split("|")
    assert len(sorted_cells) == 4  # the 4 configurations of the first experiment
    numbers = [_number(cell) for cell in sorted_cells]
    assert numbers == sorted(numbers)


def screenshot(html: Path, png: Path, size: str = "1200,900") -> None:
    """A screenshot of ``html`` as a 1200 x 900 browser window shows it (docs/figures)."""
    result = chromium(html.resolve().as_uri(), f"--screenshot={png}", f"--window-size={size}")
    if result.returncode or not png.exists():
        raise RuntimeError(result.stderr[-2000:])


if __name__ == "__main__":  # python tests/test_report_html.py REPORT.html OUT.png
    import sys

    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
