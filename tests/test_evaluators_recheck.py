"""bf16 close calls re-scored in fp32: which documents are close, and what re-scoring gives.

The decision rule is checked on hand-computed margins (acc, acc_norm per character, acc_bytes
per byte); end to end, a bf16 evaluator that re-checks every document (a bound no margin is
under) must make exactly the fp32 evaluator's decisions on every document, with the fp32
weights read again from the supernet's directory rather than the bf16-rounded ones.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch

from evaluators import Evaluator, EvaluatorError, Fidelity
from evaluators.recheck import DEFAULT_RECHECK_NATS, close_call, fp32_reference
from nas.model.directory import load_supernet, loaded_from, save_supernet

from _tiny import tiny_llama, tiny_supernet, tiny_tokenizer

TASKS = ["arc_easy", "piqa"]
FIDELITY = Fidelity(limit=8, seed=4)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def directory(tok, tmp_path_factory):
    """A tiny supernet on disk in fp32, weights not representable in bf16."""
    out = tmp_path_factory.mktemp("recheck") / "tiny"
    save_supernet(tiny_supernet(tiny_llama(tok, n_layer=3, seed=7, std=0.3)), out, tokenizer=tok)
    return out


def test_close_call_on_hand_computed_margins() -> None:
    # acc: 0.5 nats apart; close once two errors of `nats` can cover it (0.5 <= 2 * 0.3).
    # per character: -1.0 vs -0.625, 0.375 apart against 0.2/2 + 0.2/4 = 0.15 at nats 0.2
    assert not close_call([-2.0, -2.5], ["ab", "abcd"], nats=0.2)
    assert close_call([-2.0, -2.5], ["ab", "abcd"], nats=0.3)
    # per character (acc_norm) alone: 2 nats apart, but -1.0 vs -0.75 per character, against 1.25 * nats
    assert close_call([-1.0, -3.0], ["a", "abcd"], nats=0.3)
    assert not close_call([-1.0, -3.0], ["a", "abcd"], nats=0.1)
    # per byte (acc_bytes) alone: "éé" is 2 characters but 4 bytes, which ties -2.0 with -1.0 per byte
    assert close_call([-2.0, -1.0], ["éé", "ab"], nats=0.1)
    assert not close_call([-2.0, -1.0], ["cd", "ab"], nats=0.1)
    # three choices: the runner-up counts, not the last
    assert close_call([-1.0, -1.1, -9.0], ["a", "b", "c"], nats=0.06)
    assert not close_call([-1.0, -1.1, -9.0], ["a", "b", "c"], nats=0.04)
    # nothing to decide, or lengths that do not match (mutual information): never close
    assert not close_call([-1.0], ["a"], nats=10.0)
    assert not close_call([-1.0, -1.0, -2.0, -2.0], ["a", "b"], nats=10.0)


def test_loaded_from_holds_only_while_the_weights_are_as_loaded(directory) -> None:
    loaded = load_supernet(directory)
    model = loaded.model
    assert loaded_from(model) == directory
    assert loaded_from(copy.deepcopy(model)) is None  # a copy (e.g. fake-quantised) is not the directory
    with torch.no_grad():
        model.lm_head_weight.mul_(1.0)  # an in-place write, even one that changes nothing
    assert loaded_from(model) is None
    bf16 = load_supernet(directory, dtype="bf16").model
    reference = fp32_reference(bf16)
    exact = load_supernet(directory, dtype="fp32").model
    for (name, a), (_, b) in zip(reference.state_dict().items(), exact.state_dict().items(), strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b), name  # re-read, not the bf16 weights cast back
    assert not torch.equal(bf16.lm_head_weight.float(), exact.lm_head_weight)  # which would differ
    copied = fp32_reference(copy.deepcopy(bf16))  # no directory: the model's own weights in fp32
    assert torch.equal(copied.lm_head_weight, bf16.lm_head_weight.float())


def _decisions(evaluator: Evaluator) -> dict[tuple[str, str], tuple[float, ...]]:
    metrics = evaluator.evaluate("largest", FIDELITY)
    return {(s.task, s.metric): s.example_scores for s in metrics.scores if s.metric in ("acc", "acc_norm")}


def test_rechecking_every_document_gives_the_fp32_decisions(directory) -> None:
    fp32 = Evaluator.from_loaded(load_supernet(directory, dtype="fp32"), TASKS, dtype="fp32", prefix_cache_bytes=0)
    truth = _decisions(fp32)
    assert fp32.recheck_nats == 0.0 and fp32.last_stats["rechecked_docs"] == 0  # nothing to re-check in fp32
    everything = Evaluator.from_loaded(load_supernet(directory, dtype="bf16"), TASKS, dtype="bf16",
                                       prefix_cache_bytes=0, recheck_nats=1e6)
    assert _decisions(everything) == truth
    stats = everything.last_stats
    assert stats["rechecked_docs"] == stats["scored_docs"] == len(TASKS) * FIDELITY.limit
    plain = Evaluator.from_loaded(load_supernet(directory, dtype="bf16"), TASKS, dtype="bf16",
                                  prefix_cache_bytes=0, recheck_nats=0)
    plain_decisions = _decisions(plain)
    assert plain.last_stats["rechecked_docs"] == 0
    assert plain_decisions != truth  # this model's bf16 alone flips some decisions (3 here): re-checking is what fixes them
    # the bound is part of the cache key: re-checked, plain bf16 and fp32 scores are never merged
    keys = {e.settings["piqa"] for e in (fp32, everything, plain)}
    assert len(keys) == 3 and '"recheck_fp32":1000000.0' in everything.settings["piqa"]
    # off by default: plain bf16
    default = Evaluator.from_loaded(load_supernet(directory, dtype="bf16"), TASKS, dtype="bf16", prefix_cache_bytes=0)
    assert default.recheck_nats == 0.0 and _decisions(default) == plain_decisions
    # the measured bound re-checks some documents or none, and never moves a decision away from fp32
    measured = Evaluator.from_loaded(load_supernet(directory, dtype="bf16"), TASKS, dtype="bf16", prefix_cache_bytes=0,
                                     recheck_nats=DEFAULT_RECHECK_NATS)
    got = _decisions(measured)
    for key, values in got.items():
        for ours, plain_v, true_v in zip(values, plain_decisions[key], truth[key], strict=True):
            assert ours == true_v or ours == plain_v


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.5"])
def test_a_bad_bound_is_refused_naming_it(directory, bad) -> None:
    with pytest.raises(EvaluatorError, match="recheck_nats"):
        Evaluator.from_loaded(load_supernet(directory, dtype="bf16"), TASKS, dtype="bf16", recheck_nats=bad)


def test_a_spec_turns_the_recheck_on_for_its_scorers(directory) -> None:
    from evaluators.scorer import build_scorers
    from nas.search.spec import parse_spec

    spec = parse_spec({"name": "s", "supernet": str(directory), "tasks": TASKS, "budget": 1, "dtype": "bf16",
                       "recheck_nats": 0.5}, source="study.yaml")
    assert parse_spec({"name": "s", "supernet": "x", "tasks": TASKS, "budget": 1}, source="s.yaml").recheck_nats == 0.0
    (scorer,) = build_scorers(spec, load_supernet(directory, dtype="bf16"))
    assert scorer.evaluator.recheck_nats == 0.5 and '"recheck_fp32":0.5' in scorer.settings["arc_easy"]
