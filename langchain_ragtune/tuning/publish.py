"""Earlier home of :mod:`langchain_ragtune.tuning.gate` (training and the evaluation gate)
and of the canary helpers now in :mod:`langchain_ragtune.tuning.canaries`; its names stay
importable from here for one release.
"""

from langchain_ragtune.tuning.canaries import describe_canaries, published_canaries
from langchain_ragtune.tuning.gate import (GateConfig, TrainOutcome, adapter_home, cleanup_orphans,
                                           train_namespace)

__all__ = ["GateConfig", "TrainOutcome", "adapter_home", "cleanup_orphans", "describe_canaries",
           "published_canaries", "train_namespace"]
