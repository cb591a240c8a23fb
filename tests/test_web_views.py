"""The web UI's server side without a browser: offline assets, payload sizes, one number
format, the all-trials query, the infeasible page, compare and launch pages."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from nas.model.config import SupernetConfig
from reports.numbers import cell_html, human, raw
from reports.web import WebSettings, assets, create_app
from reports.web.assets import PLOTLY_URL
from storage import open_database

from _synthetic import write_synthetic_study

TOKEN = "views-token-0123456789"
CONFIG = SupernetConfig(vocab_size=96, d_model=32, n_layer=4, n_head=4, n_kv_head=2, d_ff=64)
N_TRIALS = 30


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    root = tmp_path_factory.mktemp("views")
    url = f"sqlite:///{root / 'nas.db'}"
    with open_database(url) as db:
        write_synthetic_study(db, name="toy", config=CONFIG, n_trials=N_TRIALS, seed=7)
    settings = WebSettings(database_url=url, work_dir=root / "work", token=TOKEN, cache_ttl_s=0.0)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(
    ("column", "value", "text"),
    [
        ("params", 75_123_456, "75.1 M"),
        ("non_embedding_params", 74_048, "74 k"),
        ("params", 475_000.0, "475 k"),
        ("params", 999_700, "1 M"),  # rounded before the prefix is chosen
        ("params", 512, "512"),
        ("flops_per_token", 1.9e8, "190 MFLOP"),
        ("kv_cache_bytes", 12_345_678, "12.3 MB"),
        ("memory", 232_000_000, "232 MB"),
        ("prefill_latency_ms", 12.345, "12.3 ms"),
        ("decode_tokens_per_s", 1234.5, "1.23 k/s"),
        ("accuracy", 0.512345, "0.5123"),
        ("hellaswag/acc_norm", 0.5, "0.5000"),
        ("other", 123_456, "123 k"),
        ("other", -123_456, "-123 k"),
        ("params", None, "–"),
        ("params", float("nan"), "–"),
    ],
)
def test_one_human_format(column: str, value: float, text: str) -> None:
    assert human(value, column) == text


def test_cells_carry_the_raw_value_and_the_interval() -> None:
    assert cell_html(75_123_456, "params") == '<span class="num" title="75123456">75.1 M</span>'
    assert cell_html(0.5, "accuracy", 0.01, 1.96) == '<span class="num" title="0.5">0.5000</span> <small class="pm">± 0.0196</small>'
    assert raw(1.03e8) == "103000000" and raw(None) == ""


def test_docs_and_plotly_are_local_and_cacheable(client: TestClient) -> None:
    docs = client.get("/docs").text
    assert "cdn" not in docs.lower() and "https://" not in docs
    assert "/static/vendor/swagger-ui-bundle.js" in docs and "/static/vendor/swagger-ui.css" in docs
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert client.get(f"/static/vendor/{asset}").status_code == 200
    assert client.get("/redoc", follow_redirects=False).headers["location"] == "/docs"
    page = client.get("/studies/toy", headers={"accept": "text/html"}).text
    served = assets.basic_bundle_url() if assets.basic_bundle_path() else PLOTLY_URL  # the partial bundle when installed
    assert f'src="{served}"' in page and "/static/plotly.min.js" not in page
    js = client.get(PLOTLY_URL, headers={"accept-encoding": "gzip"})
    assert js.status_code == 200 and js.headers["content-encoding"] == "gzip"
    assert "immutable" in js.headers["cache-control"] and "max-age=31536000" in js.headers["cache-control"]
    assert int(js.headers["content-length"]) < 2_000_000  # 4.8 MB of plotly.js travels as ~1.4 MB
    again = client.get(PLOTLY_URL, headers={"if-none-match": js.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_pareto_payload_is_slim_and_details_come_on_demand(client: TestClient) -> None:
    res = client.get("/api/studies/toy/figures/pareto")
    fig = res.json()
    markers = [t for t in fig["data"] if t["mode"] == "markers"]
    assert sum(len(t["x"]) for t in markers) == N_TRIALS
    assert all("hovertext" not in t for t in markers)  # no per-point text: fetched on hover
    assert len(res.content) < 12_000 + 200 * N_TRIALS
    trial = markers[0]["customdata"][0]
    brief = client.get(f"/api/studies/toy/trials/{trial}/brief").json()
    assert brief["trial"] == trial and brief["layers"] and len(brief["d_ff"]) == len(brief["layers"])
    assert client.get("/api/studies/toy/trials/999/brief").status_code == 404
    # the static report keeps its hover text inline (it has no server to ask)
    assert "hovertext" in client.get("/studies/toy/report.html").text


def test_front_follows_the_chosen_axes(client: TestClient) -> None:
    fig = client.get("/api/studies/toy/figures/pareto", params={"x": "flops_per_token", "y": "accuracy"}).json()
    plotted = next(t for t in fig["data"] if t.get("meta", {}).get("category") == "front")["customdata"]
    front = client.get("/api/studies/toy/front", params={"x": "flops_per_token", "y": "accuracy"}).json()
    assert sorted(r["trial"] for r in front) == sorted(plotted)
    flops = [r["costs"]["flops_per_token"] for r in front]
    assert flops == sorted(flops)
    assert client.get("/api/studies/toy/front", params={"x": "nope"}).status_code == 422
    html = client.get("/studies/toy", headers={"accept": "text/html"}).text
    default = client.get("/api/studies/toy/front", params={"x": "params", "y": "accuracy"}).json()
    assert html.count('class="trial-link"') == len(default)
    assert 'class="num" title=' in html and "e+0" not in html.split("<script")[0]


def test_tied_with_the_front_is_a_dominated_point_whose_interval_reaches_it() -> None:
    import pandas as pd

    from nas.metrics import objective
    from reports.figures import near_front

    x, y = objective("params", "minimize"), objective("accuracy", "maximize")
    front = pd.DataFrame({"x": [100.0, 200.0], "y": [0.5, 0.6]})
    points = pd.DataFrame({"x": [150.0, 150.0, 250.0, 90.0], "y": [0.45, 0.40, 0.59, 0.4], "ey": [0.06, 0.06, float("nan"), 0.2]})
    # 150: the staircase is at 0.5 (trial at x=100); 0.45 + 0.06 reaches it, 0.40 + 0.06 does not;
    # 250: 0.59 without an interval stays below 0.6; 90: no front member is cheaper, so nothing to tie with
    assert near_front(points, front, x, y).tolist() == [True, False, False, False]


def test_pareto_figure_shades_the_front_and_explains_its_markers(client: TestClient) -> None:
    fig = client.get("/api/studies/toy/figures/pareto").json()
    by_category = {t.get("meta", {}).get("category"): t for t in fig["data"]}
    band = by_category["front band"]
    assert band["fill"] == "tonexty" and len(band["x"]) == len(by_category["front"]["x"])
    names = " ".join(t["name"] for t in fig["data"])
    assert "open circles" in names and "crosses" in names and "tied with" in names
    dominated = by_category["dominated"]
    rings = dominated["marker"].get("line", {}).get("width", [])
    n_tied = sum(1 for w in rings if w)
    assert f"{n_tied} tied with the front" in dominated["name"] or n_tied == 0


def test_confirmed_scores_are_drawn_beside_the_search_scores() -> None:
    import pandas as pd

    from nas.metrics import objective
    from reports import figures as F

    nan = float("nan")
    columns = ["trial", "x", "y", "ex", "ey", "near"]
    points = {name: pd.DataFrame(columns=columns) for name in F.CATEGORIES}
    points["front"] = pd.DataFrame({"trial": [1, 2], "x": [100.0, 200.0], "y": [0.5, 0.6], "ex": [nan, nan],
                                    "ey": [0.01, 0.01], "near": [False, False]})
    confirmed = pd.DataFrame({"trial": [2], "x": [200.0], "y": [0.55], "ex": [nan], "ey": [0.02]})
    band = pd.DataFrame({"x": [100.0, 200.0], "y": [0.49, 0.59]})
    data = F.ParetoData("s", objective("params"), objective("accuracy"), points, points["front"][["trial", "x", "y"]],
                        confirmed, 1.96, band)
    fig = F.draw_pareto(data)
    links = next(t for t in fig.data if t.meta["category"] == "confirmation links")
    assert list(links.x) == [200.0, 200.0, None] and list(links.y) == [0.6, 0.55, None]
    diamonds = next(t for t in fig.data if t.meta["category"] == "confirmed")
    assert list(diamonds.error_y.array) == [0.02] and diamonds.marker.symbol == "diamond"


def test_export_target_says_whether_a_name_is_free_or_replaceable(client: TestClient, tmp_path) -> None:  # noqa: ANN001
    import json

    from reports.web.api_jobs import load_snippet

    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/exports/target", params={"out": "x"}).status_code == 401
    assert client.get("/api/exports/target", params={"out": "fresh"}, headers=auth).json() == {
        "out": "fresh", "free": True, "replaceable": False, "problem": None}
    exports = client.app.state.settings.exports_dir
    (exports / "old").mkdir(parents=True, exist_ok=True)
    (exports / "old" / "nas_export.json").write_text(json.dumps({"format": "nas-dense"}))
    old = client.get("/api/exports/target", params={"out": "old"}, headers=auth).json()
    assert not old["free"] and old["replaceable"] and "overwrite" in old["problem"] and str(exports) not in old["problem"]
    (exports / "other").mkdir()
    (exports / "other" / "notes.txt").write_text("not an export")
    other = client.get("/api/exports/target", params={"out": "other"}, headers=auth).json()
    assert not other["free"] and not other["replaceable"]
    assert client.get("/api/exports/target", params={"out": "../up"}, headers=auth).status_code == 400
    # how to load it names the real directory, in the export's own format
    snippet = load_snippet(exports / "old")
    assert snippet["export_format"] == "nas-dense" and "from_pretrained" not in snippet["load"]
    assert f"nas.load_exported({str(exports / 'old')!r})" in snippet["load"]
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "model-q8_0.gguf").write_bytes(b"GGUF")
    assert snippet_line(load_snippet(tmp_path / "g")).startswith(f"llama-cli -m {tmp_path / 'g' / 'model-q8_0.gguf'}")


def snippet_line(snippet: dict) -> str:
    return snippet["load"].splitlines()[0]


def test_export_format_reaches_the_command(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bad = client.post("/api/exports", json={"study": "toy", "trial": 1, "out": "q", "quant": "q8_0"}, headers=auth)
    assert bad.status_code == 422 and "gguf" in bad.text
    jobs = client.app.state.jobs
    import sys

    from reports.web.jobs import NAS_COMMAND

    jobs.command = (sys.executable, "-c", "import sys; print('nas', *sys.argv[1:])")
    try:
        res = client.post("/api/exports", json={"study": "toy", "trial": 1, "out": "g1", "format": "gguf", "quant": "q8_0"},
                          headers=auth)
        assert res.status_code == 202, res.text
        command = jobs.get(res.json()["job"]["id"]).command
        assert command[-4:] == ("--format", "gguf", "--quant", "q8_0")
    finally:
        jobs.command = NAS_COMMAND


def test_infeasible_candidate_says_which_bound_and_offers_no_export(client: TestClient) -> None:
    html = {"accept": "text/html"}
    trials = client.get("/api/studies/toy/trials", params={"limit": 100}).json()["trials"]
    spec = client.get("/api/studies/toy").json()["spec"]
    bound = spec["constraints"][0]["max"]
    bad = next(t for t in trials if not t["feasible"])
    page = client.get(f"/studies/toy/trials/{bad['trial']}", headers=html).text
    excess = bad["costs"]["params"] - bound
    assert 'id="violations"' in page and "exceeds the bound" in page
    assert human(bound, "params") in page and human(excess, "params") in page and f"{100 * excess / bound:.1f}%" in page
    assert 'id="export-card"' not in page and 'id="metrics"' not in page and "fidelity None" not in page
    good = next(t for t in trials if t["feasible"] and t["full_fidelity"])
    page = client.get(f"/studies/toy/trials/{good['trial']}", headers=html).text
    assert 'id="export-card"' in page and 'id="violations"' not in page and 'id="metrics"' in page
    assert "Against the largest sub-network:" in page
    largest = client.get("/studies/toy/trials/0", headers=html).text  # trial 0 is the largest sub-network
    assert "keeps all layers" in largest and "all heads" in largest and "full FFN width" in largest


def test_glance_is_one_bar_per_supernet_layer() -> None:
    from reports.web.views import glance_svg

    svg = glance_svg([0, 2, 3], [64, 32, 0], n_layer=4, full_d_ff=64)
    assert svg.count("<rect") == 4 and svg.count('class="dropped"') == 1  # layer 1 dropped
    assert 'height="16"></rect>' in svg and 'height="8"></rect>' in svg and 'height="0"></rect>' in svg


def test_all_trials_filter_sort_page_and_csv(client: TestClient) -> None:
    import csv
    import io

    everything = client.get("/api/studies/toy/trials", params={"limit": 500}).json()
    assert everything["total"] == N_TRIALS and [t["trial"] for t in everything["trials"]] == list(range(N_TRIALS))
    rows = {t["trial"]: t for t in everything["trials"]}
    low = sorted(t["costs"]["params"] for t in rows.values())[N_TRIALS // 4]
    q = {"fidelity": "full", "feasible": "yes", "range": [f"params:{low / 1e3:.3f}k:", "config.n_layer::3"], "sort": "params",
         "desc": "true", "limit": 3, "offset": 1}
    page = client.get("/api/studies/toy/trials", params=q).json()
    expected = sorted((t for t in rows.values() if t["fidelity"] == "full" and t["feasible"] and t["costs"]["params"] >= round(low, 0)
                       and len(t["layers"]) <= 3), key=lambda t: (-t["costs"]["params"], t["trial"]))
    assert len(expected) >= 3 and page["total"] == len(expected) and page["matching"] == [t["trial"] for t in expected]
    assert [t["trial"] for t in page["trials"]] == [t["trial"] for t in expected][1:4]
    never = client.get("/api/studies/toy/trials", params={"fidelity": "none"}).json()
    assert {t["trial"] for t in never["trials"]} == {t for t, r in rows.items() if r["fidelity"] is None}
    sel = client.get("/api/studies/toy/trials", params={"trials": "2,5-7,29"}).json()
    assert sel["matching"] == [2, 5, 6, 7, 29]
    front = client.get("/api/studies/toy/trials", params={"front_x": "flops_per_token", "front_y": "accuracy"}).json()
    axes_front = client.get("/api/studies/toy/front", params={"x": "flops_per_token", "y": "accuracy"}).json()
    assert sorted(front["matching"]) == sorted(r["trial"] for r in axes_front)
    for bad in ({"range": "params"}, {"range": "params:x:"}, {"sort": "nope"}, {"trials": "a,b"}, {"feasible": "maybe"}):
        assert client.get("/api/studies/toy/trials", params=bad).status_code == 422, bad
    text = client.get("/api/studies/toy/trials.csv", params={k: v for k, v in q.items() if k not in ("limit", "offset")}).text
    table = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["trial"]) for r in table] == [t["trial"] for t in expected]
    assert float(table[0]["params"]) == expected[0]["costs"]["params"] and table[0]["config_json"].startswith("{")


def test_compare_two_candidates(client: TestClient) -> None:
    html = {"accept": "text/html"}
    front = client.get("/api/studies/toy/front").json()
    a, b = front[0], front[-1]
    page = client.get(f"/studies/toy/compare?trials={a['trial']},{b['trial']}", headers=html)
    assert page.status_code == 200
    text = page.text
    assert f"#{a['trial']}" in text and f"#{b['trial']}" in text and "difference to #" in text
    diff = b["accuracy"] - a["accuracy"]
    assert f"{diff:+.4f}" in text and "independent" in text  # synthetic rows have no per-example scores
    assert human(a["costs"]["params"], "params") in text and human(b["costs"]["params"], "params") in text
    layers_a = dict(zip(a["layers"], a["d_ff"]))
    layers_b = dict(zip(b["layers"], b["d_ff"]))
    n_differ = sum(1 for layer in range(CONFIG.n_layer) if (layer in layers_a) != (layer in layers_b)
                   or (layer in layers_a and layers_a[layer] != layers_b[layer]))
    body = text.split('id="layer-diff"', 1)[1]
    assert body.count('class="differs"') >= n_differ and body.count("<tr><td>L") == CONFIG.n_layer
    # one trial: a chooser; five or a bad number: a clear 422
    chooser = client.get(f"/studies/toy/compare?trials={a['trial']}", headers=html).text
    assert 'id="choose-form"' in chooser and chooser.count('class="pick-trial"') == len(front)
    assert client.get("/studies/toy/compare?trials=1,2,3,4,5", headers=html).status_code == 422
    assert client.get("/studies/toy/compare?trials=1,x", headers=html).status_code == 422
    assert client.get("/studies/toy/compare?trials=1,999", headers=html).status_code == 404


def test_paired_difference_uses_the_shared_examples(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from reports.web import compare

    view = client.app.state.cache.view("toy")
    front = client.get("/api/studies/toy/front").json()
    t0, t1 = front[0]["trial"], front[1]["trial"]
    s0, s1 = (int(view.trial(t)["subnet_id"]) for t in (t0, t1))
    parts = [tuple(c.rsplit("/", 1)) for c in view.axes.weights]
    rows = []
    for subnet, bump in ((s0, 0.0), (s1, 1.0)):
        for task, metric in parts:  # the second is right on 1 more document of 4 in every task
            scores = [1.0, 0.0, 0.0, 0.0] if bump == 0 else [1.0, 1.0, 0.0, 0.0]
            rows.append(SimpleNamespace(subnet_id=subnet, task=task, metric=metric, example_ids=[0, 1, 2, 3], example_scores=scores))
    monkeypatch.setattr(compare.storage, "subnet_example_scores", lambda db, ids, fidelity, settings=None: rows)
    (diff,) = compare.paired_accuracy(client.app.state.db, view, [t0, t1], "full")
    assert diff["paired"] and diff["mean"] == pytest.approx(0.25)
    # per task: differences (0, 1, 0, 0): stderr 0.25 (n = 4), weighted over the tasks as independent parts
    weights = list(view.axes.weights.values())
    expected = (sum((w * 0.25) ** 2 for w in weights) ** 0.5) / sum(weights)
    assert diff["stderr"] == pytest.approx(expected)


def test_launch_page_and_spec_check(client: TestClient) -> None:
    html = client.get("/launch", headers={"accept": "text/html"}).text
    assert 'id="launch-form"' in html and 'value="nsga2" selected' in html and 'class="l-task" value="hellaswag"' in html
    auth = {"Authorization": f"Bearer {TOKEN}"}
    spec = {"name": "s1", "supernet": "nowhere", "tasks": ["hellaswag"], "budget": {"n_trials": 3}, "sampler": "annealing"}
    assert client.post("/api/studies/check", json={"spec": spec}).status_code == 401
    bad = client.post("/api/studies/check", json={"spec": spec}, headers=auth).json()
    assert bad["ok"] is False and "sampler" in bad["problem"]
    spec["sampler"] = "random"
    missing = client.post("/api/studies/check", json={"spec": spec}, headers=auth).json()
    assert missing["ok"] is False and "not a supernet directory" in missing["problem"]
    (client.app.state.settings.work_dir / "sn").mkdir(parents=True, exist_ok=True)
    good = client.post("/api/studies/check", json={"spec": {**spec, "supernet": "sn"}}, headers=auth).json()
    assert good == {"ok": True, "problem": None, "study": "s1"}
    assert not (client.app.state.settings.work_dir / "specs" / "s1.yaml").exists()  # checked, not launched


def test_charts_at_real_sizes(client: TestClient) -> None:
    from reports import figures as F

    view = client.app.state.cache.view("toy")
    # parallel coordinates: the summary group has no per-layer axes; a per-layer group has one dim of each layer
    summary = client.get("/api/studies/toy/figures/parallel").json()["data"][0]["dimensions"]
    labels = [d["label"] for d in summary]
    assert "n_layer" in labels and "params" in labels and not any(".n_head" in label or ".d_ff" in label for label in labels)
    heads = client.get("/api/studies/toy/figures/parallel", params={"group": "n_head"}).json()["data"][0]["dimensions"]
    assert heads and all(d["label"].endswith(".n_head") for d in heads)
    assert client.get("/api/studies/toy/figures/parallel", params={"group": "nope"}).status_code == 422
    # per-task bars: a page of 12 front members at a time, the title says which
    front = client.get("/api/studies/toy/front").json()
    bars = client.get("/api/studies/toy/figures/tasks", params={"offset": 1}).json()
    shown = bars["data"][0]["customdata"]
    assert shown == [r["trial"] for r in front][1:13]
    if len(front) > 12:
        assert f"2–{1 + len(shown)} of {len(front)}" in bars["layout"]["title"]["text"]
    # 3-D: the automatic third objective is the one least correlated with the first two
    data = F.pareto3d_data(view)
    third = data.objectives[2].column
    first_two = [o.column for o in data.objectives[:2]]
    candidates = [c for c in ("flops_per_token", "non_embedding_params", "prefill_latency_ms", *view.metric_columns)
                  if c in view.frame.columns and c not in first_two]
    assert F._max_abs_corr(view.frame, third, first_two) <= min(F._max_abs_corr(view.frame, c, first_two) for c in candidates)
    assert third != "non_embedding_params"
