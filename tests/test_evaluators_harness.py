"""The nas-subnet lm-eval adapter and the study-level Evaluator against lm-eval's HFLM.

A tiny random LlamaForCausalLM and our Supernet hold the same weights (fp32), so every
request must score the same under lm-eval's HFLM and under our adapter.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance

from evaluators import Evaluator, EvaluatorError, Fidelity, SubnetLM, subset_ids
from evaluators.types import Metrics
from nas.model.directory import save_supernet
from nas.model.subnet import SubnetConfig

from _tiny import corpus_text, tiny_llama, tiny_supernet, tiny_tokenizer

MAX_LEN = 48
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread (no OpenMP hand-offs on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()
    hf = tiny_llama(tok)
    return tok, hf, tiny_supernet(hf)


@pytest.fixture(scope="module")
def hflm(tiny):
    from lm_eval.models.huggingface import HFLM

    tok, hf, _ = tiny
    return HFLM(pretrained=hf, tokenizer=tok, batch_size=3, max_length=MAX_LEN, device="cpu")


@pytest.fixture(scope="module")
def ours(tiny):
    tok, _, model = tiny
    return SubnetLM(model, "full", tokenizer=tok, dtype="fp32", batch_size=4, max_length=MAX_LEN)


def req(kind: str, *args: object) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args if len(args) > 1 else (args[0],), idx=0)


LONG = " ".join(["All: speak, speak. First Citizen: You are all resolved rather to die than to famish?"] * 4)
LL_REQUESTS = [
    ("The quick brown fox", " jumps over the lazy dog"),
    ("The quick brown fox", " sleeps"),
    ("The quick brown fox", " is quick"),
    ("", "First Citizen: speak."),  # empty context: the prefix token conditions
    ("A man is sitting on a roof. ", "He starts"),  # trailing space moves to the continuation
    (LONG, " Resolved."),  # longer than max_length: left-truncated like HFLM
    (LONG, " hear me speak"),
    ("Question: why?\nAnswer:", " because"),
]


def test_loglikelihood_matches_hflm(hflm, ours):
    requests = [req("loglikelihood", c, x) for c, x in LL_REQUESTS]
    expected = hflm.loglikelihood(requests, disable_tqdm=True)
    got = ours.loglikelihood(requests, disable_tqdm=True)
    for (ll_e, greedy_e), (ll_g, greedy_g) in zip(expected, got, strict=True):
        assert abs(ll_e - ll_g) < 1e-4
        assert greedy_e == greedy_g


def test_both_logprob_modes_match_hflm_in_fp32_and_unknown_modes_are_refused(tiny, hflm):
    tok, _, model = tiny
    requests = [req("loglikelihood", c, x) for c, x in LL_REQUESTS]
    expected = hflm.loglikelihood(requests, disable_tqdm=True)
    for mode in ("exact", "hflm"):
        lm = SubnetLM(model, "full", tokenizer=tok, dtype="fp32", batch_size=4, max_length=MAX_LEN, logprobs=mode)
        for (ll_e, greedy_e), (ll_g, greedy_g) in zip(expected, lm.loglikelihood(requests, disable_tqdm=True), strict=True):
            assert abs(ll_e - ll_g) < 1e-4 and greedy_e == greedy_g
    with pytest.raises(EvaluatorError, match="logprobs='fast' is not one of exact, hflm"):
        SubnetLM(model, "full", tokenizer=tok, logprobs="fast")


def test_loglikelihood_tokens_greedy_flag_matches_hflm(tiny, hflm, ours):
    tok, hf, _ = tiny
    ctx = tok.encode("The quick brown fox jumps")
    ids = list(ctx)
    with torch.no_grad():
        for _ in range(4):
            ids.append(int(hf(torch.tensor([ids])).logits[0, -1].argmax()))
    greedy = ids[len(ctx) :]
    requests = [((None,), ctx, greedy), ((None,), ctx, greedy[:2] + [7, 9]), ((None,), ctx[:3], greedy[:1])]
    expected = hflm._loglikelihood_tokens(requests, disable_tqdm=True)
    got = ours._loglikelihood_tokens(requests)
    assert got[0][1] is True and expected[0][1] is True
    for (ll_e, greedy_e), (ll_g, greedy_g) in zip(expected, got, strict=True):
        assert abs(ll_e - ll_g) < 1e-4 and greedy_e == greedy_g


def test_shared_context_is_computed_once_and_equals_unshared(tiny):
    tok, _, model = tiny
    requests = [req("loglikelihood", c, x) for c, x in LL_REQUESTS]
    shared = SubnetLM(model, "full", tokenizer=tok, dtype="fp32", batch_size=8, max_length=MAX_LEN)
    together = shared.loglikelihood(requests, disable_tqdm=True)
    # every distinct (truncated) context runs once, then each continuation but its last token
    contexts, fed = set(), 0
    for c, x in LL_REQUESTS:
        ctx, cont = ([shared.prefix_token_id], shared.tok_encode(x, add_special_tokens=False)) if not c else shared._encode_pair(c, x)
        whole = (ctx + cont)[-(MAX_LEN + 1):]
        contexts.add(tuple(whole[: len(whole) - len(cont)]))
        fed += len(cont) - 1
    assert len(contexts) < len(requests)
    assert shared.n_tokens == sum(map(len, contexts)) + fed
    alone = SubnetLM(model, "full", tokenizer=tok, dtype="fp32", batch_size=1, max_length=MAX_LEN)
    separate = [alone.loglikelihood([r], disable_tqdm=True)[0] for r in requests]
    for (a, ga), (b, gb) in zip(together, separate, strict=True):
        assert abs(a - b) < 1e-5 and ga == gb


def test_rolling_windows_match_hflm(hflm, ours, tiny):
    tok = tiny[0]
    text = corpus_text(700)
    assert len(tok.encode(text)) > 3 * MAX_LEN  # several disjoint windows
    requests = [req("loglikelihood_rolling", text), req("loglikelihood_rolling", text[:60])]
    expected = hflm.loglikelihood_rolling(requests, disable_tqdm=True)
    got = ours.loglikelihood_rolling(requests, disable_tqdm=True)
    for e, g in zip(expected, got, strict=True):
        assert math.isclose(e, g, rel_tol=1e-6, abs_tol=1e-4)


def test_greedy_generation_matches_hflm(hflm, ours):
    requests = [
        req("generate_until", "First Citizen:", {"until": ["\n\n"], "max_gen_toks": 12}),
        req("generate_until", "All: speak", {"until": ["e"], "max_gen_toks": 10}),
        req("generate_until", "The quick brown fox jumps over", {"until": ["\n\n"], "max_gen_toks": 12}),
        req("generate_until", "Q", {"until": ["\n\n"], "max_gen_toks": 5}),
    ]
    expected = hflm.generate_until(requests, disable_tqdm=True)
    got = ours.generate_until(requests, disable_tqdm=True)
    assert got == expected
    assert "e" not in got[1]  # cut at the stop sequence
    with pytest.raises(EvaluatorError, match="greedily"):
        ours.generate_until([req("generate_until", "A", {"do_sample": True, "temperature": 0.7})])


def test_subnet_specs_and_views_equal_extracted_models(tiny, tmp_path):
    tok, _, model = tiny
    small = SubnetConfig(layers=(0,), n_head=(2,), d_ff=(64,), d_model=64)
    (tmp_path / "sub.json").write_text(small.to_json())
    for spec in (small, small.to_json(), small.to_dict(), str(tmp_path / "sub.json")):
        assert SubnetLM(model, spec, tokenizer=tok, dtype="fp32").subnet == small
    assert SubnetLM(model, "largest", tokenizer=tok, dtype="fp32").subnet == model.full_subnet()
    requests = [req("loglikelihood", c, x) for c, x in LL_REQUESTS[:4]]
    view = SubnetLM(model, small, tokenizer=tok, dtype="fp32", max_length=MAX_LEN).loglikelihood(requests, disable_tqdm=True)
    dense = SubnetLM(model.extract(small), "full", tokenizer=tok, dtype="fp32", max_length=MAX_LEN).loglikelihood(requests, disable_tqdm=True)
    full = SubnetLM(model, "full", tokenizer=tok, dtype="fp32", max_length=MAX_LEN).loglikelihood(requests, disable_tqdm=True)
    assert all(abs(a[0] - b[0]) < 1e-4 for a, b in zip(view, dense, strict=True))
    assert all(abs(a[0] - b[0]) > 1e-3 for a, b in zip(view, full, strict=True))


def test_bad_inputs_raise_clear_errors(tiny):
    tok, _, model = tiny
    with pytest.raises(EvaluatorError, match="layer 5 does not exist"):
        SubnetLM(model, SubnetConfig(layers=(0, 5), n_head=(4, 4), d_ff=(128, 128), d_model=64), tokenizer=tok, dtype="bf16")
    assert model.lm_head_weight.dtype == torch.float32  # a refused adapter leaves the model alone
    with pytest.raises(EvaluatorError, match="d_ff=999"):
        SubnetLM(model, '{"layers": [0], "n_head": [4], "d_ff": [999], "d_model": 64}', tokenizer=tok)
    with pytest.raises(EvaluatorError, match="'biggest' is not 'largest'"):
        SubnetLM(model, "biggest", tokenizer=tok)
    with pytest.raises(EvaluatorError, match="bf16 or fp32"):
        SubnetLM(model, "largest", tokenizer=tok, dtype="fp16")
    with pytest.raises(EvaluatorError, match="tokenizer is required"):
        SubnetLM(model, "largest")
    with pytest.raises(EvaluatorError, match="does not exist"):
        SubnetLM("/nonexistent/supernet", "largest")


def test_subset_is_seeded_nested_and_not_the_first_documents():
    a = subset_ids("arc_easy", 1000, Fidelity(limit=100, seed=0))
    assert a == subset_ids("arc_easy", 1000, Fidelity(limit=100, seed=0)) and len(a) == 100
    assert a != list(range(100)) and a == sorted(a)
    assert set(a) <= set(subset_ids("arc_easy", 1000, Fidelity(limit=200, seed=0)))
    assert a != subset_ids("arc_easy", 1000, Fidelity(limit=100, seed=1))
    assert a != subset_ids("piqa", 1000, Fidelity(limit=100, seed=0))
    assert subset_ids("x", 10, Fidelity(limit=100)) == list(range(10))


def test_which_fidelities_contain_which():
    parse = Fidelity.parse
    # search documents are the head of the order: a limit's label carries no holdout
    assert parse("n100-s0").contains(parse("n50-s0")) and not parse("n50-s0").contains(parse("n100-s0"))
    assert Fidelity(100, 0, holdout=100).contains(parse("n50-s0"))
    assert parse("full-h100-s0").contains(parse("n50-s0")) and parse("full").contains(parse("full-h100-s0"))
    assert not parse("full-h100-s0").contains(parse("full")) and not parse("n50-s0").contains(parse("full-h100-s0"))
    assert not parse("n100-s1").contains(parse("n50-s0"))
    # confirmation documents are the tail: never inside a search fidelity, and only of their own holdout
    assert parse("call-h100-s0").contains(parse("c50-h100-s0")) and not parse("c50-h100-s0").contains(parse("call-h100-s0"))
    assert not parse("call-h200-s0").contains(parse("c50-h100-s0")) and not parse("full").contains(parse("c50-h100-s0"))
    assert not parse("call-h100-s0").contains(parse("n50-s0"))
    n = 1000
    for big, small in [("full-h100-s0", "n50-s0"), ("call-h100-s0", "c50-h100-s0"), ("n100-s0", "n50-s0")]:
        assert set(parse(small).doc_ids("piqa", n)) <= set(parse(big).doc_ids("piqa", n))  # what contains promises


@pytest.fixture(scope="module")
def evaluator(tiny):
    tok, hf, _ = tiny
    model = tiny_supernet(hf)  # its own copy: the Evaluator may cast it
    ev = Evaluator(model, tok, ["arc_easy", "lambada_openai"], dtype="fp32", batch_size=8, max_length=MAX_LEN)
    yield ev
    ev.close()


def test_evaluator_matches_lm_eval_evaluate_on_the_same_documents(evaluator):
    from lm_eval.evaluator import evaluate as lm_eval_evaluate

    fidelity = Fidelity(limit=6, seed=3)
    metrics = evaluator.evaluate("largest", fidelity)
    assert metrics.fidelity == "n6-s3" and metrics.harness_version and metrics.wall_s > 0
    assert set(metrics.task_hashes) == {"arc_easy", "lambada_openai"}
    samples = {task: evaluator.subset(task, fidelity) for task in ("arc_easy", "lambada_openai")}
    reference = {}
    for task, obj in evaluator.tasks.tasks.items():  # one task per call: our evaluator batches each task on its own
        reference.update(lm_eval_evaluate(
            evaluator.lm("largest"),
            {"tasks": {task: obj}, "groups": {}},
            samples={task: samples[task]},
            bootstrap_iters=0,
            log_samples=False,
        )["results"])
    for task, metric in (("arc_easy", "acc"), ("arc_easy", "acc_norm"), ("lambada_openai", "acc"), ("lambada_openai", "perplexity")):
        score = metrics.get(task, metric)
        assert score.example_ids == tuple(samples[task]) and score.n_examples == 6
        assert math.isclose(score.value, reference[task][f"{metric},none"], rel_tol=1e-9)
    acc = metrics.get("arc_easy", "acc")
    assert acc.value == sum(acc.example_scores) / 6
    assert math.isclose(acc.stderr, math.sqrt(acc.value * (1 - acc.value) / 5), rel_tol=1e-9)
    assert math.isfinite(metrics.get("lambada_openai", "perplexity").stderr)


def test_evaluator_never_reuses_answers_across_candidates(evaluator):
    fidelity = Fidelity(limit=5, seed=0)
    smallest = SubnetConfig(layers=(0,), n_head=(2,), d_ff=(64,), d_model=64)
    first = evaluator.evaluate("largest", fidelity).get("lambada_openai", "perplexity")
    other = evaluator.evaluate(smallest, fidelity).get("lambada_openai", "perplexity")
    again = evaluator.evaluate("largest", fidelity).get("lambada_openai", "perplexity")
    assert other.example_scores != first.example_scores
    assert again.example_scores == first.example_scores and again.value == first.value


def test_greedy_check_runs_only_when_a_task_reads_it(tiny, evaluator):
    tok, hf, _ = tiny
    assert evaluator.score_greedy  # lambada_openai's acc is is_greedy
    assert evaluator.lm("largest").score_greedy
    mc_only = Evaluator(tiny_supernet(hf), tok, ["arc_easy"], dtype="fp32", batch_size=8, max_length=MAX_LEN)
    try:
        assert not mc_only.score_greedy and not mc_only.lm("largest").score_greedy
        fidelity = Fidelity(limit=6, seed=3)
        fast = mc_only.evaluate("largest", fidelity)
        full = evaluator.evaluate("largest", fidelity)
        for metric in ("acc", "acc_norm"):  # multiple-choice scores never read is_greedy
            assert fast.get("arc_easy", metric).example_scores == full.get("arc_easy", metric).example_scores
    finally:
        mc_only.close()


def test_registered_name_and_lm_eval_cli(tiny, tmp_path):
    from lm_eval.api.registry import get_model

    assert get_model("nas-subnet") is SubnetLM
    tok, _, model = tiny
    save_supernet(model, tmp_path / "sn", tokenizer=tok)
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "evaluators.lm_eval_cli", "--model", "nas-subnet",
        "--model_args", f"supernet={tmp_path / 'sn'},subnet=largest,dtype=fp32,max_length={MAX_LEN}",
        "--tasks", "arc_easy", "--limit", "3", "--batch_size", "4",
        "--output_path", str(out), "--log_samples",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "arc_easy" in run.stdout and "acc" in run.stdout
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["config"]["model"] == "nas-subnet"
    assert results["configs"]["arc_easy"]["dataset_path"] == "json"  # the local pack task
    samples = [json.loads(line) for line in next(out.rglob("samples_arc_easy_*.jsonl")).read_text().splitlines()]
    assert len(samples) == 3
    lm = SubnetLM(model, "largest", tokenizer=tok, dtype="fp32", max_length=MAX_LEN)
    for sample in samples:
        args = [(a["arg_0"], a["arg_1"]) for a in sample["arguments"].values()]
        got = lm.loglikelihood([req("loglikelihood", *a) for a in args], disable_tqdm=True)
        expected = [float(r[0][0]) for r in sample["resps"]]
        assert all(abs(g - e) < 1e-4 for (g, _), e in zip(got, expected, strict=True))



def test_lm_eval_cli_reports_bad_subnet_without_a_traceback(tiny, tmp_path, monkeypatch, capsys):
    from evaluators.lm_eval_cli import main

    tok, _, model = tiny
    save_supernet(model, tmp_path / "sn", tokenizer=tok)
    monkeypatch.setattr(sys, "argv", ["lm-eval"])
    args = ["--model", "nas-subnet", "--model_args", f"supernet={tmp_path / 'sn'},subnet=biggest", "--tasks", "arc_easy", "--limit", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "error: subnet 'biggest' is not 'largest'" in capsys.readouterr().err


@pytest.mark.parametrize("holdout", [0, 200])  # 200: a study that holds confirmation documents out
def test_a_nested_rung_scores_only_its_new_documents_and_equals_scoring_it_directly(evaluator, holdout):
    low = evaluator.evaluate("largest", Fidelity(limit=4, seed=3, holdout=holdout))
    low = Metrics(low.scores, low.fidelity, low.harness_version)  # as the search passes it on: by its label
    merged = evaluator.evaluate("largest", Fidelity(limit=9, seed=3, holdout=holdout), prior=low)
    merged_tokens = evaluator.last_stats["n_tokens"]
    direct = evaluator.evaluate("largest", Fidelity(limit=9, seed=3, holdout=holdout))
    assert merged_tokens < evaluator.last_stats["n_tokens"]  # arc_easy's 4 known documents were not run again
    assert [(s.task, s.metric) for s in merged.scores] == [(s.task, s.metric) for s in direct.scores]
    for ours, theirs in zip(merged.scores, direct.scores, strict=True):
        assert ours == theirs  # value, stderr, ids and per-example scores, bit for bit
    # a prior that is not nested in the fidelity is ignored, not merged
    other = evaluator.evaluate("largest", Fidelity(limit=4, seed=5))
    assert evaluator.evaluate("largest", Fidelity(limit=9, seed=3), prior=other).scores == direct.scores
