"""llama-cpp-python for the engine tests: the module, or a skip saying why (a failure under
CI=true, where .ci/run installs it)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from nas.errors import NasError
from nas.export.engine import require_llama_cpp


def llama_cpp_or_skip() -> Any:
    try:
        return require_llama_cpp()
    except NasError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc} (CI=true: .ci/run installs it)")
        pytest.skip(str(exc))
