"""`dvc plots show` draws every plot that dvc.yaml declares, offline, each as it is meant to be read.

The page is built by docs/render_plots_screenshot.py (the README screenshot's code) in a throwaway repository with
this checkout's dvc.yaml, .dvc/config and templates, and small plot data: the git-tracked curves and evaluation
plots of outputs/, tube-length files from normalize's own quantile function, held-out validation curves in
DVCLive's layout (the committed run predates the validation), one GIF render. Headless Chromium
opens it from disk with no host name resolvable and a dead proxy, and the test reads the drawn SVG back.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TRACKED = [  # plot data that git tracks (cache: false): the default run's real curves and scores
    "outputs/pretrain_grounding/curve.csv",
    *sorted(
        str(p.relative_to(REPO)) for p in (REPO / "outputs/train/live/plots/metrics/train").rglob("*.tsv")
    ),  # DVCLive's loss and learning-rate curves
    "outputs/evaluate/plots/viou_histogram.csv",
    "outputs/evaluate/plots/tiou_viou.csv",
]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shot = _script("render_plots_screenshot")
needs_chromium = pytest.mark.skipif(
    not shot.CHROMIUM.is_file(),
    reason=f"no {shot.CHROMIUM}: headless Chromium (Debian package `chromium`) draws the page",
)


class _Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: _Node | None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, tag: str | None = None, **attrs: str) -> list[_Node]:
        """Descendants with that tag and attributes (a value ending in "*" matches as a prefix)."""

        def match(node: _Node) -> bool:
            for key, want in attrs.items():
                have = node.attrs.get(key.rstrip("_").replace("_", "-")) or ""
                if not (have.startswith(want[:-1]) if want.endswith("*") else have == want):
                    return False
            return tag is None or node.tag == tag

        return [node for node in self.walk() if node is not self and match(node)]


class _Tree(HTMLParser):
    VOID = {"img", "br", "meta", "input", "link", "hr", "source", "wbr"}

    def __init__(self, html: str):
        super().__init__()
        self.root = self.node = _Node("#root", {}, None)
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        child = _Node(tag, {k: v or "" for k, v in attrs}, self.node)
        self.node.children.append(child)
        if tag not in self.VOID:
            self.node = child

    def handle_startendtag(self, tag, attrs):
        self.node.children.append(_Node(tag, {k: v or "" for k, v in attrs}, self.node))

    def handle_endtag(self, tag):
        node = self.node
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.node = node.parent


def _plot_data(root: Path) -> None:
    """The plot files dvc.yaml names, under root/: the tracked ones copied, the others made small."""
    for rel in TRACKED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    from cgstvg.data.normalize import tube_length_quantiles

    rng = np.random.default_rng(0)
    tube_dir = root / "outputs/normalize/plots/tube_length"
    tube_dir.mkdir(parents=True)
    for i, name in enumerate(
        ["hcstvg_v1-train", "hcstvg_v1-test", "hcstvg_v2-train", "hcstvg_v2-val", "vidstg-train", "vidstg-val"]
        + ["vidstg-test"]
    ):
        starts = rng.integers(0, 20, 30)
        rows = [{"tube_start": int(s), "tube_end": int(s + 5 + i + rng.integers(0, 10))} for s in starts]
        with open(tube_dir / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["quantile", "tube_length"])
            writer.writerows(tube_length_quantiles(rows))
    val = root / "outputs/train/live/plots/metrics/val"
    val.mkdir(parents=True)
    for name, level in (("m_tIoU", 0.5), ("m_vIoU", 0.3)):
        rows = "".join(f"{step}\t{level * step / 900}\n" for step in (300, 600, 900))
        (val / f"{name}.tsv").write_text(f"step\t{name}\n{rows}")
    renders = root / "outputs/evaluate/renders"
    renders.mkdir(parents=True)
    frames = [Image.new("RGB", (48, 32), (60 * k, 90, 200)) for k in range(3)]
    frames[0].save(renders / "0_synth_test_00000.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """(declared plots, the page's file, its HTML as written, the DOM tree after the scripts ran, console log)."""
    if not shot.CHROMIUM.is_file():
        pytest.skip(f"no {shot.CHROMIUM}: headless Chromium (Debian package `chromium`) draws the page")
    data, repo = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("repo")
    _plot_data(data)
    plots = shot.make_plots_repo(repo, data)
    page, log = shot.plots_show(repo)
    assert "failed to load" not in log, log  # every declared file was there and read
    dom, console = shot.dump_dom(page)
    return plots, page, page.read_text(encoding="utf-8"), _Tree(dom).root, console


@needs_chromium
def test_the_page_needs_no_network(drawn):
    _, _, html, _, console = drawn
    assert "<script src" not in html.replace(" ", "") and "cdn.jsdelivr" not in html  # all of vega inlined
    assert "Uncaught" not in console and "Error" not in console, console


@needs_chromium
def test_every_declared_plot_is_drawn_once(drawn):
    plots, _, _, tree, _ = drawn
    vega = [p for p in plots if p["kind"] == "vega"]
    charts = tree.find("div", class_="vega-embed*")
    # IoU, tube length, loss, lr, held-out validation (top level); histogram, scatter (evaluate)
    assert len(charts) == len(vega) == 7
    titles = []
    for chart in charts:
        assert chart.find("svg", class_="marks"), f"{chart.attrs.get('id')}: nothing drawn"
        [title] = chart.find(aria_roledescription="title")
        titles.append(title.attrs["aria-label"].removeprefix("Title text '").removesuffix("'"))
    assert sorted(titles) == sorted(p["props"].get("title", p["id"]) for p in vega)
    # a file drawn by a top-level plot is not drawn again on its own
    files = [f for p in plots for f in dict.fromkeys(f for f, _ in p["sources"])]
    assert len(files) == len(set(files)), files


@needs_chromium
def test_each_series_has_its_own_line_and_colour(drawn):
    plots, _, _, tree, _ = drawn
    charts = {c.attrs["id"]: c for c in tree.find("div", class_="vega-embed*")}
    series_plots = [p for p in plots if p["props"].get("template") == "series"]
    assert {p["id"] for p in series_plots} >= {
        "training loss",
        "learning rates",
        "train: held-out validation",
        "tube length by quantile",
    }
    for plot in series_plots:
        [chart] = [c for c in charts.values() if c.find(aria_label=f"Title text '{plot['id']}'")]
        lines = chart.find("path", aria_roledescription="line mark")
        colours = {line.attrs["stroke"] for line in lines}
        assert len(lines) == len(colours) == len(plot["sources"]), plot["id"]
        [legend] = chart.find(aria_roledescription="legend")
        names = [Path(f).stem if len({f for f, _ in plot["sources"]}) > 1 else c for f, c in plot["sources"]]
        assert f"with {len(names)} values: " in legend.attrs["aria-label"]
        assert set(legend.attrs["aria-label"].split("values: ")[1].split(", ")) == set(names), plot["id"]


@needs_chromium
def test_the_viou_histogram_has_the_bins_across_and_the_counts_up(drawn):
    _, _, _, tree, _ = drawn
    [chart] = [c for c in tree.find("div", class_="vega-embed*") if c.find(aria_label="Title text 'vIoU per sample*")]
    bars = [b.attrs["aria-label"] for b in chart.find("path", aria_roledescription="bar")]
    with open(REPO / "outputs/evaluate/plots/viou_histogram.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(bars) == len(rows)
    # the geometry: upright bars of one width, left to right by bin, each as tall as its count
    shapes = [
        re.match(r"M([-\d.e]+),([-\d.e]+)h([-\d.e]+)v([-\d.e]+)", b.attrs["d"])
        for b in chart.find("path", aria_roledescription="bar")
    ]
    assert all(shapes)
    x, _, width, height = (np.array([float(s.group(k)) for s in shapes]) for k in (1, 2, 3, 4))
    counts = np.array([float(r["count"]) for r in rows])
    order = np.argsort([float(r["bin_center"]) for r in rows])
    assert np.allclose(width, width[0]) and np.all(np.diff(x[order]) > 0)
    assert np.allclose(height[order], counts[order] * height.max() / counts.max(), atol=0.5)
    for row in rows:  # e.g. "vIoU (bin centre): 0.05; test samples: 17; rev: workspace"
        assert f"vIoU (bin centre): {row['bin_center']}; test samples: {row['count']};" in " ".join(bars) + ";"
    [x_axis] = [a for a in chart.find(aria_roledescription="axis") if a.attrs["aria-label"].startswith("X-axis")]
    assert "vIoU (bin centre)" in x_axis.attrs["aria-label"] and "discrete scale with" in x_axis.attrs["aria-label"]


@needs_chromium
def test_the_renders_are_image_plots(drawn):
    _, page, _, tree, _ = drawn
    images = [img for img in tree.find("img") if img.attrs.get("src", "").startswith("static/")]
    assert [Path(img.attrs["src"]).suffix for img in images] == [".gif"]
    assert all((page.parent / img.attrs["src"]).is_file() for img in images)  # beside the page: opens from disk


def test_the_committed_page_is_what_docs_build_plots_page_builds():
    if importlib.util.find_spec("js_lib_vega_embed") is None:
        pytest.skip("django-js-lib-vega-embed is not installed (pip install -e '.[test]')")
    page = _script("build_plots_page")
    assert page.PAGE.read_text(encoding="utf-8") == page.build(), "run python docs/build_plots_page.py"
    config = (REPO / ".dvc" / "config").read_text()
    assert "html_template = vega/page.html" in config  # DVC resolves it against .dvc/


def test_dvc_yaml_declares_every_plot_template_it_names():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    builtin = {"linear", "simple", "scatter", "smooth", "confusion", "confusion_normalized", "scatter_jitter"}
    for plot in shot.declared_plots(dvc_yaml):
        template = (plot["props"] or {}).get("template")
        assert template != "bar_horizontal", plot["id"]  # its x is the bar length: a histogram drawn sideways
        assert template is None or template in builtin or (REPO / ".dvc" / "plots" / f"{template}.json").is_file()
