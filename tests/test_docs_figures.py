"""The README figures made by scripts in docs/: `docs/plot_learning_curves.py` draws box_losses.png headless."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("plot_learning_curves", REPO / "docs" / "plot_learning_curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learning_curves_figure_is_drawn_from_the_shipped_csvs(tmp_path):
    script = _script()
    out = script.main(["--out", str(tmp_path / "box_losses.png")])
    committed = REPO / "docs" / "learning_curves" / "box_losses.png"
    with Image.open(out) as drawn, Image.open(committed) as shipped:
        assert drawn.format == "PNG" and drawn.size == shipped.size == (1200, 350)
    for name in script.RUNS:  # every curve read has all three panels' terms
        curve = script.read_curve(REPO / "docs" / "learning_curves" / name)
        assert len(curve["step"]) > 10 and set(script.PANELS) <= set(curve)
