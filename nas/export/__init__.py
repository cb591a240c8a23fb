"""Shipping a picked sub-network: exports, their model cards, loading and verification.

* :mod:`nas.export.format` — the export directory layout, formats and transformers mapping;
* :mod:`nas.export.source` — what an export needs of one trial, read from storage;
* :mod:`nas.export.writer` — :func:`~nas.export.writer.export_subnet`;
* :mod:`nas.export.card` — the model card;
* :mod:`nas.export.loading` — :func:`~nas.export.loading.load_exported`;
* :mod:`nas.export.verify` — :func:`~nas.export.verify.verify_export`;
* :mod:`nas.export.gguf` (+ :mod:`nas.export.gguf_vocab`) — :func:`~nas.export.gguf.export_gguf`,
  a GGUF that llama.cpp runs;
* :mod:`nas.export.engine` — running a GGUF in llama-cpp-python: :func:`~nas.export.engine.verify_gguf`,
  :func:`~nas.export.engine.engine_latency`.
"""

from __future__ import annotations

from nas.export.loading import ExportedModel, load_exported
from nas.export.source import ExportSource, ScoreRecord, export_source
from nas.export.verify import ParityReport, verify_export
from nas.export.writer import ExportResult, export_subnet

__all__ = ["ExportResult", "ExportSource", "ExportedModel", "ParityReport", "ScoreRecord", "export_source", "export_subnet", "load_exported",
           "verify_export"]
