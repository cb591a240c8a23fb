"""Figure builders on hand-made rows: assert on the computed data and the figure's data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nas.front import hypervolume_history
from nas.metrics import ACCURACY, objective
from reports import figures as F
from tests._study_rows import FRONT, view


def test_view_derives_front_accuracy_and_fidelity() -> None:
    v = view()
    f = v.frame.set_index("trial")
    assert v.top_fidelity == "full"
    assert [o.column for o in v.objectives] == [ACCURACY, "params"]
    assert set(v.front["trial"]) == FRONT
    assert f.loc[3, ACCURACY] == pytest.approx(0.60)  # mean of the two tasks' main metrics
    assert f.loc[1, f"{ACCURACY}_stderr"] == pytest.approx(math.sqrt(0.01**2 + 0.02**2) / 2)
    assert not f.loc[4, "full_fidelity"] and not f.loc[4, "on_front"]  # best accuracy, but low fidelity
    assert math.isnan(f.loc[5, ACCURACY]) and not f.loc[5, "on_front"]
    assert "latency_ms" in v.cost_columns  # the spec's latency name is derived from the measured prefill
    assert v.objective_for("latency").column == "latency_ms"
    assert v.objective_for("hellaswag").column == "hellaswag/acc_norm"


def test_pareto_data_categories_and_step_line() -> None:
    data = F.pareto_data(view(), "params", ACCURACY)
    trials = {name: set(pts["trial"]) for name, pts in data.points.items()}
    assert trials == {"front": FRONT, "dominated": {2, 6}, "low fidelity only": {4}, "infeasible": {5}}
    assert list(data.front["x"]) == sorted(data.front["x"])
    assert list(data.front["trial"]) == [0, 1, 7, 3]
    # the infeasible trial has no accuracy: pinned to the worst plotted accuracy
    inf = data.points["infeasible"].iloc[0]
    assert inf["x"] == 900 and inf["y"] == pytest.approx(0.30)


def test_draw_pareto_traces_hover_and_links() -> None:
    fig = F.pareto_figure(view(), "params", ACCURACY)
    markers = [t for t in fig.data if t.mode == "markers"]
    assert sum(len(t.x) for t in markers) == 8  # every trial exactly once
    line = next(t for t in fig.data if t.mode == "lines")
    assert line.line.shape == "hv"  # x minimised: right then up
    assert list(line.x) == [100, 200, 350, 400]
    front = next(t for t in markers if t.meta["category"] == "front")
    assert sorted(front.customdata) == sorted(FRONT)
    hover = front.hovertext[0]
    assert "hellaswag/acc_norm" in hover and "arc_easy/acc" in hover and "params" in hover and "±" in hover
    assert "heads" in hover and "d_ff" in hover  # per-layer glance
    assert fig.layout.xaxis.title.text.startswith("parameters")
    low = next(t for t in markers if t.meta["category"] == "low fidelity only")
    assert low.marker.symbol == "circle-open"
    # maximised x flips the staircase
    flipped = F.pareto_figure(view(), ACCURACY, "params")
    assert next(t for t in flipped.data if t.mode == "lines").line.shape == "vh"


def test_pareto_any_pair_of_objectives() -> None:
    data = F.pareto_data(view(), "latency_ms", "hellaswag/acc_norm")
    assert data.x.direction == "minimize" and data.y.direction == "maximize"
    assert set(data.points["front"]["trial"]) == FRONT  # latency is monotone in params here
    with pytest.raises(Exception, match="no column"):
        F.pareto_data(view(), "nope", ACCURACY)


def test_three_objective_view() -> None:
    fig = F.pareto3d_figure(view(), [ACCURACY, "params", "hellaswag/acc_norm"])
    assert [t.type for t in fig.data] == ["scatter3d", "scatter3d"]
    front = next(t for t in fig.data if t.name.startswith("front"))
    assert set(front.customdata) == FRONT


def test_hypervolume_history_matches_hand_computation() -> None:
    # reference as `nas status`: accuracy 0 (maximised), params = the largest sub-network's (given: 900)
    v = view(cost_reference={"params": 900.0})
    hist = hypervolume_history(v.frame, v.objectives)
    assert hist.trials == tuple(range(8))
    assert all(b >= a for a, b in zip(hist.values, hist.values[1:]))
    assert hist.reference == (0.0, 900.0)
    # area dominated in (params/900 down, accuracy up) w.r.t. (1, 0): a staircase of 4 steps
    pts = [(100, 0.30), (200, 0.40), (350, 0.50), (400, 0.60)]
    xs = [p / 900 for p, _ in pts]
    ys = [a for _, a in pts]
    expected = sum((xs[i + 1] - xs[i]) * ys[i] for i in range(len(xs) - 1)) + (1 - xs[-1]) * ys[-1]
    assert hist.values[-1] == pytest.approx(expected)
    assert hist.values[0] == pytest.approx((1 - 100 / 900) * 0.30)
    fig = F.hypervolume_figure(v)
    assert list(fig.data[0].y) == pytest.approx(list(hist.values))
    # without a known largest sub-network: 1.1 x the worst top-fidelity cost
    assert hypervolume_history(view().frame, view().objectives).reference == (0.0, pytest.approx(550.0))


def test_task_breakdown_of_front_members() -> None:
    data = F.task_breakdown_data(view())
    assert data.trials == (0, 1, 7, 3)  # cheapest first
    values, errs = data.metrics["hellaswag/acc_norm"]
    assert values == pytest.approx((0.30, 0.40, 0.50, 0.60)) and set(errs) == {0.02}
    fig = F.draw_task_breakdown(data)
    assert {t.name for t in fig.data} == {"hellaswag/acc_norm", "arc_easy/acc"}
    assert list(fig.data[0].error_y.array) == pytest.approx(list(data.metrics[fig.data[0].name][1]))


def test_parallel_coordinates_coloured_by_accuracy() -> None:
    data = F.parallel_data(view())
    labels = [label for label, _ in data.dimensions]
    assert labels[0] == "n_layer" and "d_ff_mean" in labels
    assert len(data.colour) == 7  # every scored trial (the infeasible one has no accuracy)
    fig = F.draw_parallel(data)
    assert fig.data[0].type == "parcoords"
    assert list(fig.data[0].line.color) == pytest.approx(list(data.colour))


def test_overlay_of_two_studies() -> None:
    a, b = view("unhealed"), view("healed", shift=0.1)
    fig = F.overlay_figure([a, b], "params", ACCURACY)
    names = [t.name for t in fig.data]
    assert names == ["unhealed (6)", "unhealed front (4)", "healed (6)", "healed front (4)"]
    assert np.allclose(np.array(fig.data[3].y) - np.array(fig.data[1].y), 0.1)
    with pytest.raises(ValueError):
        F.overlay_figure([a], "params", ACCURACY)


def test_layer_chart_marks_dropped_layers() -> None:
    data = F.layer_chart_data({"layers": [0, 2], "n_head": [4, 2], "d_ff": [64, 32], "d_model": 32},
                              {"n_layer": 3, "n_head": 4, "d_ff": 64})
    assert data.kept == (True, False, True)
    assert data.n_head == (4, 0, 2) and data.full_d_ff == (64, 64, 64)
    fig = F.draw_layer_chart(data)
    assert "dropped layers: L1" in fig.layout.title.text


def test_objective_directions() -> None:
    assert objective("heldout_loss/loss").direction == "minimize"
    assert objective("piqa/acc").direction == "maximize"
    assert objective("decode_tokens_per_s").direction == "maximize"
    assert objective("params").direction == "minimize"
