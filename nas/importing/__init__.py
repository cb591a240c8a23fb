"""Importing pretrained models as supernets.

* :mod:`nas.importing.sources` — model sources (``hf:DIR``, ``gguf:FILE``, named offline
  sources) and :func:`~nas.importing.sources.import_source`, the import pipeline;
* :mod:`nas.importing.families` — the supported model families and their configs, both ways;
* :mod:`nas.importing.hf` — weight conversion between transformers models and supernets;
* :mod:`nas.importing.importance` — importance of heads, KV groups, neurons, experts and
  layers on calibration text, and the permutation that makes prefixes the best units.
"""
