"""``dtype: auto``: bf16 where the device computes it natively, fp32 elsewhere, resolved once
per study and kept by every resume."""

from __future__ import annotations

from pathlib import Path

import pytest

import storage
from nas.errors import NasError
from nas.model import precision as dtypes
from nas.model.directory import LoadedSupernet
from nas.search.study import open_search

from _search import heldout_scorer, make_spec, save_tiny_supernet

X86_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n"
X86_AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize(("text", "native"), [(X86_AVX2, []), (X86_AMX, ["amx_bf16", "avx512_bf16"]), (ARM_BF16, ["bf16"])])
def test_cpu_flags_read_the_first_cpu_of_x86_and_arm_cpuinfo(tmp_path: Path, text: str, native: list[str]) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    flags = dtypes.cpu_flags(path)
    assert "avx2" in flags or "asimd" in flags or "avx512f" in flags
    assert sorted(flags & dtypes.BF16_CPU_FLAGS) == native
    assert dtypes.cpu_flags(tmp_path / "missing") == frozenset()  # unreadable: nothing is native


@pytest.mark.parametrize(("text", "expected"), [(X86_AVX2, "fp32"), (X86_AMX, "bf16"), (ARM_BF16, "bf16")])
def test_auto_is_bf16_only_where_the_cpu_has_bf16_instructions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               text: str, expected: str) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    real = dtypes.cpu_flags
    monkeypatch.setattr(dtypes, "cpu_flags", lambda cpuinfo=path: real(cpuinfo))
    dtypes.fast_dtype.cache_clear()
    try:
        dtype, why = dtypes.fast_dtype("cpu")
        assert dtype == expected and why
        assert dtypes.resolve_dtype("auto") == expected
        assert dtypes.resolve_dtype("bfloat16") == "bf16" and dtypes.resolve_dtype("fp32") == "fp32"  # explicit names stay
    finally:
        dtypes.fast_dtype.cache_clear()
    with pytest.raises(NasError, match="fp16 is unusably slow"):
        dtypes.resolve_dtype("fp16")


def test_a_study_stores_the_dtype_auto_resolved_to_and_a_resume_keeps_it(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    tiny: LoadedSupernet = save_tiny_supernet(tmp_path / "sn")
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    spec = make_spec(tiny.path, url, dtype="auto", budget={"n_trials": 2})
    assert spec.dtype == "auto"
    monkeypatch.setattr("nas.search.study.fast_dtype", lambda device="cpu": ("fp32", "test: no bf16 here"))
    search = open_search(spec, scorers=[heldout_scorer(tiny)])  # loads the supernet in the resolved dtype
    assert search.setup.spec.dtype == "fp32"
    assert str(search.setup.loaded.model.lm_head_weight.dtype) == "torch.float32"
    search.optimize()
    assert storage.get_study(search.db, "s").spec["dtype"] == "fp32"
    search.db.close()
    # the same spec resumed on a machine where auto would mean bf16: the study keeps fp32
    monkeypatch.setattr("nas.search.study.fast_dtype", lambda device="cpu": ("bf16", "test: native bf16"))
    again = open_search(spec.model_copy(update={"budget": spec.budget.model_copy(update={"n_trials": 3})}),
                        scorers=[heldout_scorer(tiny)])
    assert again.setup.spec.dtype == "fp32"
    assert again.optimize().trials_run == 1
    again.db.close()
    # a new study with auto takes the (patched) device's dtype
    fresh = open_search(make_spec(tiny.path, url, name="t", dtype="auto", budget={"n_trials": 1}),
                        scorers=[heldout_scorer(tiny)])
    assert fresh.setup.spec.dtype == "bf16"
    fresh.db.close()


def test_a_training_config_resolves_auto_on_parsing_and_keeps_an_explicit_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from nas.training.config import TrainConfig

    data = yaml.safe_load((Path(__file__).resolve().parent.parent / "examples" / "train_tiny.yaml").read_text())
    data.pop("dtype", None)
    for native in ("bf16", "fp32"):
        monkeypatch.setattr("nas.training.config.fast_dtype", lambda device="cpu", n=native: (n, "test"))
        assert TrainConfig.model_validate({**data, "device": "cpu"}).dtype == native  # the default is auto
        assert TrainConfig.model_validate({**data, "device": "cpu", "dtype": "auto"}).dtype == native
        assert TrainConfig.model_validate({**data, "dtype": "fp32"}).dtype == "fp32"


@pytest.mark.parametrize(("text", "expected"), [(X86_AVX2, "fp32"), (X86_AMX, "bf16")])
def test_import_scoring_and_held_out_loss_default_to_the_fast_dtype(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    text: str, expected: str) -> None:
    """Where no dtype is given, an import's importance pass, an Evaluator and a held-out loss
    run in what ``auto`` means on this CPU: on an AVX2-only one bf16 is emulated (an import of
    SmolLM2 took 5.6x as long in bf16 as in fp32 there, README)."""
    import torch

    from evaluators import Evaluator
    from nas.importing import importance
    from nas.training.sandwich import autocast

    from _tiny import tiny_llama, tiny_supernet, tiny_tokenizer

    path = tmp_path / "cpuinfo"
    path.write_text(text)
    real = dtypes.cpu_flags
    monkeypatch.setattr(dtypes, "cpu_flags", lambda cpuinfo=path: real(cpuinfo))
    dtypes.fast_dtype.cache_clear()
    want = {"fp32": torch.float32, "bf16": torch.bfloat16}[expected]
    try:
        tok = tiny_tokenizer()
        model = tiny_supernet(tiny_llama(tok, n_layer=2, seed=0))
        assert importance.work_dtype(model, "auto") == want
        assert importance.work_dtype(model, "fp32") == torch.float32  # an explicit dtype is kept
        evaluator = Evaluator(model, tok, ["arc_easy"], batch_size=4, max_length=128)  # no dtype given
        assert evaluator.model.lm_head_weight.dtype == want
        assert isinstance(autocast(torch.device("cpu"), "auto"), torch.autocast) == (expected == "bf16")
        assert isinstance(autocast(torch.device("cpu"), "bf16"), torch.autocast)  # asked for: given
    finally:
        dtypes.fast_dtype.cache_clear()
