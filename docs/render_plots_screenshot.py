"""Draw the `dvc plots show` page in headless Chromium, offline, and write a screenshot (docs/plots_show.png).

The page is built in a throwaway copy of the repository that holds only what `dvc plots show` reads: dvc.yaml,
params.yaml, .dvc/config with its HTML template (.dvc/vega/page.html) and plot templates (.dvc/plots/), and the
plot data files dvc.yaml declares, copied from `--data` (an outputs folder's parent: a checkout after `dvc repro`).
Missing image plots (outputs/evaluate/live/plots/images) can be stood in for by `--render IMAGE`. Chromium runs with
every host name unresolvable and a dead proxy, so the page draws only if it needs no network.
tests/test_plots_render.py uses the same functions.

    python docs/render_plots_screenshot.py --data /path/to/checkout [--render docs/example_hard_clip.gif]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's `chromium` package
DVC = str(Path(sys.executable).with_name("dvc"))
IMAGE_SUFFIXES = (".gif", ".png", ".jpg", ".jpeg", ".svg")
# What a `dvc plots show` run in the copy reads besides the plot data.
REPO_FILES = ("dvc.yaml", "params.yaml", ".dvc/config", ".dvc/vega/page.html", ".dvc/plots")
OFFLINE = [
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no host name resolves
    "--proxy-server=127.0.0.1:9",  # and anything by address goes to the discard port: refused
    "--proxy-bypass-list=<-loopback>",
]


def declared_plots(dvc_yaml: dict) -> list[dict]:
    """Each plot `dvc plots show` draws for dvc.yaml: {"id", "kind": "vega" | "images", "sources": [(file, field)]}.

    Top-level entries with a `y:` mapping are one vega plot each; a top-level path entry is an image plot (one
    per image file in it); stage-level plots are one vega plot per file."""
    plots: list[dict] = []
    for entry in dvc_yaml.get("plots") or []:
        [(name, props)] = entry.items() if isinstance(entry, dict) else [(entry, None)]
        y = (props or {}).get("y")
        if isinstance(y, dict):
            sources = [(f, c) for f, cols in y.items() for c in ([cols] if isinstance(cols, str) else cols)]
            plots.append({"id": name, "kind": "vega", "sources": sources, "props": props})
        else:
            plots.append({"id": name, "kind": "images", "sources": [(name, None)], "props": props or {}})
    for stage in dvc_yaml["stages"].values():
        for entry in stage.get("plots") or []:
            [(path, props)] = entry.items() if isinstance(entry, dict) else [(entry, {})]
            plots.append({"id": path, "kind": "vega", "sources": [(path, props.get("y"))], "props": props})
    return plots


def make_plots_repo(dest: Path, data: Path, render: Path | None = None) -> list[dict]:
    """A git+DVC repository at `dest` with this checkout's plot settings and the plot data found under `data`
    (missing files are left out: DVC then warns and draws the rest); `render` stands in for missing images.
    Returns declared_plots() of its dvc.yaml."""
    for rel in REPO_FILES:
        src, dst = REPO / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    plots = declared_plots(yaml.safe_load((dest / "dvc.yaml").read_text()))
    for plot in plots:
        for rel, _ in plot["sources"]:
            src, dst = data / rel, dest / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            elif src.is_file():
                shutil.copy2(src, dst)
            elif plot["kind"] == "images" and render is not None:
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copy2(render, dst / f"0_{render.name}")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return plots


def plots_show(repo: Path, timeout: float = 120) -> tuple[Path, str]:
    """Run `dvc plots show` in `repo` (the template from .dvc/config); (the page written, DVC's output)."""
    done = subprocess.run([DVC, "plots", "show"], cwd=repo, capture_output=True, text=True, timeout=timeout, check=True)
    return repo / "dvc_plots" / "index.html", done.stdout + done.stderr


def chromium(page: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Headless Chromium on the page from disk (file://), offline, after 10 s of virtual time (the page's
    scripts run to completion first); console messages go to stderr."""
    argv = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",  # as root, and in containers without user namespaces
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        *OFFLINE,
        *args,
        page.resolve().as_uri(),
    ]
    with tempfile.TemporaryDirectory() as profile:
        argv.insert(1, f"--user-data-dir={profile}")
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True)


def dump_dom(page: Path) -> tuple[str, str]:
    """(the DOM after the scripts ran, the console messages)."""
    done = chromium(page, "--dump-dom")
    console = "\n".join(line for line in done.stderr.splitlines() if ":CONSOLE" in line)
    return done.stdout, console


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 1600) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    chromium(page, f"--screenshot={png.resolve()}", f"--window-size={width},{height}")
    return png


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO, help="the checkout whose outputs/ hold the plot data")
    parser.add_argument(
        "--render", type=Path, help="an image to show where outputs/evaluate/live/plots/images is missing"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "plots_show.png")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        make_plots_repo(Path(tmp), args.data.resolve(), args.render)
        page, log = plots_show(Path(tmp))
        print(log.strip())
        screenshot(page, args.out, args.width, args.height)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
