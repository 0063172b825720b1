"""Model cards: published figures, and the README that shows them."""

from pathlib import Path

import pytest

import slimtorch.zoo as zoo
from slimtorch.zoo.cards import Published, model_table, parse_figure

README = Path(__file__).resolve().parents[2] / "models" / "zoo" / "README.md"


def test_published_figures_parse_with_their_rounding():
    assert parse_figure("3.47M") == pytest.approx((3.47e6, 5e3))
    assert parse_figure("1,248,424") == (1248424.0, 0.5)
    assert parse_figure("1.4G") == pytest.approx((1.4e9, 5e7))
    assert Published.agrees(0.47e6, "0.5M") and not Published.agrees(0.44e6, "0.5M")
    assert Published.agrees(3.505e6, "3.47M") and not Published.agrees(3.56e6, "3.47M")
    with pytest.raises(ValueError, match=r"figure: expected a number like '3\.47M' or '1,248,424', got 'about 4M'"):
        parse_figure("about 4M")
    with pytest.raises(ValueError, match=r"name: 'resnet50' is not a slimtorch\.zoo model"):
        zoo.model_card("resnet50")


def test_readme_shows_the_current_model_table_and_every_recipe():
    readme = README.read_text()
    assert model_table() in readme, "regenerate the README table with slimtorch.zoo.cards.model_table()"
    for name in zoo.DISTILLATION_RECIPES:
        assert f"`{name}`" in readme
