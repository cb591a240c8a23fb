"""Training supernets: from scratch with the sandwich rule, or healing an imported one."""

from __future__ import annotations

from nas.training.trainer import *  # noqa: F403 - temporary during the split
from nas.training.trainer import __all__  # noqa: F401
