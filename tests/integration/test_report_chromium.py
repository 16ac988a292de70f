"""The experiment report as a browser draws it: headless Chromium renders the page from a
file:// URL (no network) to a screenshot, and the screenshot holds the plots' marks, each in
its fixed colour (aiml024.runtime.report.PALETTE). Needs Debian's `chromium`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.unit.test_report import binary_inputs

from aiml024.runtime.report import PALETTE, render_report

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no `chromium` binary on PATH: install it with `apt-get install -y chromium` "
    "(Debian; `make chromium` does) to check that the report's plots draw",
)
WIDTH, HEIGHT = 1280, 4000
TOLERANCE = 12  # per channel: antialiased edges differ, a mark's body does not


def screenshot(page: str, tmp: Path, name: str) -> np.ndarray:
    """The page as headless Chromium draws it at WIDTH x HEIGHT: an RGB array."""
    Image = pytest.importorskip("PIL.Image", reason="Pillow reads the screenshot")
    html_file, png = tmp / f"{name}.html", tmp / f"{name}.png"
    html_file.write_text(page, encoding="utf-8")
    profile = tmp / f"{name}-profile"
    profile.mkdir()
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--screenshot={png}",
        html_file.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    return pixels


def colour_pixels(pixels: np.ndarray, colour: str) -> int:
    """How many pixels are `colour` (#rrggbb), within TOLERANCE on every channel."""
    target = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return int((np.abs(pixels - np.asarray(target)).max(axis=2) <= TOLERANCE).sum())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return binary_inputs(tmp_path_factory.mktemp("report-chromium"))


def test_the_reports_plots_draw_in_a_browser(inputs: dict[str, Any], tmp_path: Path) -> None:
    pixels = screenshot(render_report(**inputs), tmp_path, "report")
    # Not blank: a white page with a grey margin has two colours; text and plots bring many.
    flat = pixels.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    assert len(colours) > 200
    assert 1.0 - counts.max() / len(flat) > 0.02  # more than 2% is not the commonest colour
    # SHAP and permutation-importance bars: solid rectangles, tens of thousands of pixels.
    assert colour_pixels(pixels, PALETTE["bar"]) > 5000
    # Lines 3px wide: best so far, the PDP of a numeric column, the reliability curve.
    assert colour_pixels(pixels, PALETTE["line"]) > 800
    # Points: completed trials, categorical PDPs, reliability bins.
    assert colour_pixels(pixels, PALETTE["point"]) > 300


def test_without_explanations_or_history_no_plot_draws(
    inputs: dict[str, Any], tmp_path: Path
) -> None:
    """The control: the same card alone has no plot, so none of the plot colours shows."""
    pixels = screenshot(render_report(inputs["card"]), tmp_path, "bare")
    assert colour_pixels(pixels, PALETTE["bar"]) < 50
    assert colour_pixels(pixels, PALETTE["line"]) < 50
    assert colour_pixels(pixels, PALETTE["point"]) < 50
