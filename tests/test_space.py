"""Search spaces and sub-network configs: validation, canonical form, Optuna mapping."""

from __future__ import annotations

import random

import optuna
import pytest

from nas.errors import NasError
from nas.model.config import SupernetConfig
from nas.model.space import SearchSpace
from nas.model.subnet import SubnetConfig

CONFIG = SupernetConfig(vocab_size=50, d_model=32, n_layer=4, n_head=4, n_kv_head=2, d_ff=48)
RANK = (0, 3, 2, 1)


def test_default_space_has_whole_kv_groups_and_quarter_ffn():
    space = SearchSpace.default(CONFIG, RANK)
    assert space.layers[0].n_head == (2, 4)
    assert space.layers[0].d_ff == (12, 24, 36, 48)
    assert space.n_layer_choices == (2, 3, 4)
    assert space.largest().layers == (0, 1, 2, 3)
    assert space.smallest().layers == (0, 3)  # the two highest-ranked layers, in original order
    assert space.smallest().d_ff == (12, 12)


def test_size_matches_enumeration_and_members_are_valid():
    space = SearchSpace.from_dict({"d_ff_choices": [24, 48]}, CONFIG, RANK)
    members = list(space.enumerate())
    assert len(members) == space.size() == len(set(members))
    assert space.size() == (4**2) + (4**3) + (4**4)  # (2 heads x 2 d_ff) per kept layer
    for sub in members:
        space.check(sub)


def test_canonical_json_and_stable_hash():
    a = SubnetConfig(layers=(0, 2), n_head=(2, 4), d_ff=(12, 48), d_model=32)
    b = SubnetConfig.from_json('{"d_model": 32, "d_ff": [12, 48], "n_head": [2, 4], "layers": [0, 2]}')
    assert a == b and hash(a) == hash(b)
    assert a.to_json() == '{"d_ff":[12,48],"d_model":32,"layers":[0,2],"n_head":[2,4]}'
    assert a.hash == b.hash and len(a.hash) == 16
    assert a.hash == SubnetConfig.from_json(a.to_json()).hash


def test_hash_is_stable_across_processes():
    # the hash is a sha256 of canonical JSON, never Python's randomised hash()
    sub = SubnetConfig(layers=(0, 1), n_head=(2, 2), d_ff=(12, 12), d_model=32)
    import hashlib

    assert sub.hash == hashlib.sha256(sub.to_json().encode()).hexdigest()[:16]


def test_optuna_round_trip_with_stable_names():
    space = SearchSpace.default(CONFIG, RANK)
    names = space.param_choices()
    assert "layer_3.d_ff" in names and "n_layer" in names
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(5):
        trial = study.ask()
        sub = space.suggest(trial)
        space.check(sub)
        assert space.from_params(space.to_params(sub)) == sub
        seen.append(sub)
    assert len(set(seen)) > 1


def test_sample_is_reproducible_from_the_rng():
    space = SearchSpace.default(CONFIG, RANK)
    a = [space.sample(random.Random(7)) for _ in range(3)]
    b = [space.sample(random.Random(7)) for _ in range(3)]
    assert a == b


def test_tied_space_is_homogeneous():
    space = SearchSpace.from_dict({"tied": True}, CONFIG, RANK)
    rng = random.Random(0)
    for _ in range(10):
        assert space.sample(rng).is_homogeneous()
    assert set(space.param_choices()) == {"n_layer", "n_head", "d_ff"}


def test_yaml_round_trip(tmp_path):
    space = SearchSpace.from_dict({"d_ff_choices": [24, 48], "layers": {0: {"d_ff_choices": [48]}}}, CONFIG, RANK)
    path = tmp_path / "space.yaml"
    path.write_text(space.to_yaml())
    assert SearchSpace.from_yaml(path, CONFIG) == space


@pytest.mark.parametrize(
    "data, message",
    [
        ({"d_ff_choices": [100]}, "d_ff_choices \\[100\\] has illegal value"),
        ({"n_head_choices": [3]}, "allowed: multiples of 2"),
        ({"n_layer_choices": [9]}, "within 1..4"),
        ({"d_ff_choice": [12]}, "unknown key"),
        ({"layers": {7: {"d_ff_choices": [12]}}}, "layers \\[7\\] do not exist"),
        ({"n_expert_choices": [2]}, "dense in the supernet"),
    ],
)
def test_space_that_does_not_fit_the_supernet_is_refused(data, message):
    with pytest.raises(NasError, match=message):
        SearchSpace.from_dict(data, CONFIG, RANK)


def test_config_outside_the_space_is_refused():
    space = SearchSpace.from_dict({"d_ff_choices": [24, 48]}, CONFIG, RANK)
    with pytest.raises(NasError, match="d_ff=12 not in d_ff_choices"):
        space.check(SubnetConfig(layers=(0, 1, 2, 3), n_head=(4,) * 4, d_ff=(12, 48, 48, 48), d_model=32))
    with pytest.raises(NasError, match="highest-ranked"):
        space.check(SubnetConfig(layers=(1, 2), n_head=(4, 4), d_ff=(48, 48), d_model=32))
    with pytest.raises(NasError, match="not in its choices"):
        space.from_params({"layer_0.d_ff": 13})
    with pytest.raises(NasError, match="must be distinct and ascending"):
        SubnetConfig(layers=(2, 1), n_head=(4, 4), d_ff=(48, 48), d_model=32)
    with pytest.raises(NasError, match="not valid JSON"):
        SubnetConfig.from_json("{layers: 1")


def test_enumeration_of_a_huge_space_is_refused():
    big = SupernetConfig(vocab_size=50, d_model=576, n_layer=30, n_head=9, n_kv_head=3, d_ff=1536)
    with pytest.raises(NasError, match="sample it instead"):
        next(SearchSpace.default(big).enumerate())


def test_moe_space_clamps_top_k_to_experts_kept():
    moe = SupernetConfig(vocab_size=50, d_model=16, n_layer=2, n_head=2, n_kv_head=1, d_ff=8, n_expert=4, top_k=4)
    space = SearchSpace.default(moe)
    sub = space.from_params({"layer_0.n_expert": 2, "layer_0.top_k": 4})
    assert sub.n_expert[0] == 2 and sub.top_k[0] == 2
    assert len(list(space.enumerate())) == space.size()
