"""Server-drawn SVG charts: well-formed, escaped, scaled to the data."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from engine.web.charts import Series, _nice_ceiling, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_a_chart_is_well_formed_svg_with_a_point_per_value_and_escaped_names():
    svg = line_chart(["2027-01", "2027-02", "2027-03"],
                     [Series("economic", [10.0, None, 30.0]), Series("<script>x</script>", [5.0, 7.5, 0.0])],
                     title="Click rate", unit="%")
    root = ET.fromstring(str(svg))
    assert root.tag == f"{SVG}svg" and root.find(f"{SVG}title").text == "Click rate"
    assert len(root.findall(f"{SVG}circle")) == 5  # the missing value draws no point
    assert len(root.findall(f"{SVG}polyline")) == 2
    assert "<script>" not in str(svg) and "&lt;script&gt;" in str(svg)
    tips = [c.find(f"{SVG}title").text for c in root.findall(f"{SVG}circle")]
    assert "economic, 2027-03: 30%" in tips


def test_the_axis_ends_on_a_round_number_above_the_data():
    assert [_nice_ceiling(v) for v in (0, 0.4, 3, 7.5, 42, 230, 999, 1001)] == [1, 1, 5, 10, 50, 250, 1000, 2000]


def test_an_empty_chart_still_draws():
    root = ET.fromstring(str(line_chart([], [], title="Nothing yet")))
    assert root.findall(f"{SVG}circle") == []
