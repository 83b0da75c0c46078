"""Write .dvc/vega/page.html: the HTML template of `dvc plots show`, with vega, vega-lite and vega-embed inlined.

DVC's own page loads the three scripts from a CDN, so offline it is blank. `.dvc/config` points `plots.html_template`
at this page instead (DVC resolves the path against `.dvc/`); the page has no `{scripts}` placeholder, so DVC adds
no CDN tags, and everything the plots need is in the one `dvc_plots/index.html` it writes, which therefore works
when opened from disk, copied elsewhere, or served from anywhere.

The scripts are the unmodified minified builds shipped by the PyPI package `django-js-lib-vega-embed` (a wheel of
static files with no dependencies; in the `test` extra of pyproject.toml): vega 5.33.0, vega-lite 5.23.0 and
vega-embed 6.29.0, all BSD-3-Clause (University of Washington Interactive Data Lab); .dvc/vega/LICENSE carries the
licence. The page is committed, so `dvc plots show` needs nothing installed beyond DVC; this script rebuilds it, and
tests/test_plots_render.py checks that the committed page is what it builds.

    python docs/build_plots_page.py            # rewrite .dvc/vega/page.html
    python docs/build_plots_page.py --check    # exit 1 if the committed page differs
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / ".dvc" / "vega" / "page.html"
PACKAGE = "js_lib_vega_embed"  # the import name of django-js-lib-vega-embed
SCRIPTS = ("vega5.js", "vega-lite5.js", "vega-embed6.js")  # the order they depend on each other
VERSIONS = "vega 5.33.0, vega-lite 5.23.0, vega-embed 6.29.0 (django-js-lib-vega-embed 6.29.0.3)"
# DVC fills the page by plain text replacement of these; a script containing one would be corrupted.
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")

HEAD = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
    <!-- {versions}: BSD-3-Clause, see .dvc/vega/LICENSE. Inlined by docs/build_plots_page.py so that the page
         needs no network; DVC's CDN script tags are left out on purpose (this template has no scripts slot). -->
"""

# vega-embed draws on a canvas unless told otherwise; SVG looks the same, and puts each mark in the page, where
# tests/test_plots_render.py counts them. DVC calls vegaEmbed(selector, spec) with no options, hence the wrapper.
SVG = """    <script>/* cgstvg: vega-embed's renderer set to SVG */
    window.vegaEmbed = (function (embed) {
        return function (el, spec, opt) { return embed(el, spec, Object.assign({renderer: "svg"}, opt || {})); };
    })(window.vegaEmbed);
    </script>
"""

TAIL = """    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def script_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{PACKAGE} is not installed: pip install -e '.[test]' (django-js-lib-vega-embed)")
    return Path(next(iter(spec.submodule_search_locations))) / "static" / PACKAGE


def build() -> str:
    """The page's text, from the installed package's scripts."""
    parts = [HEAD.format(versions=VERSIONS)]
    for name in SCRIPTS:
        js = (script_dir() / name).read_text(encoding="utf-8")
        for bad in (*PLACEHOLDERS, "</script"):
            if bad in js:
                raise ValueError(f"{name} contains {bad!r}; it cannot be inlined as it is")
        parts.append(f"    <script>/* {name} */\n{js.strip()}\n    </script>\n")
    parts += [SVG, TAIL]
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed page instead of writing")
    parser.add_argument("--out", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from what docs/build_plots_page.py builds'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text)} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
