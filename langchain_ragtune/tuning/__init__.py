"""Parametric memory training: LoRA adapters per namespace, their validation and registry.

* :mod:`~langchain_ragtune.tuning.registry`: :class:`AdapterRegistry` and :class:`AdapterRecord`
  (which versions exist, which one serves) on PostgreSQL.
* :mod:`~langchain_ragtune.tuning.train`: LoRA training with peft + transformers (lazy imports).
* :mod:`~langchain_ragtune.tuning.validate`: checks an adapter folder against vLLM's limits.
* :mod:`~langchain_ragtune.tuning.evaluate`: closed-book accuracy and the evaluation gate.

Importing this package loads no torch: the heavy modules import it when they run.
"""

from langchain_ragtune.tuning.registry import ADAPTER_STATUSES, AdapterRecord, AdapterRegistry

__all__ = ["ADAPTER_STATUSES", "AdapterRecord", "AdapterRegistry"]
