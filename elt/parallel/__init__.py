"""The parallel copy: table streams at once into staging schemas, swapped in at the end.

PostgreSQL cannot share one transaction between sessions, so parallel sessions
cannot load the destination atomically by themselves. Instead the source's
schema is staged under other names (plan.py, staging.py), several workers copy
the rows and build the indexes and keys into it (scheduler.py, worker.py), and
one transaction swaps it in (staging.swap). docs/parallel-copy.md tells the
whole story. Sources it cannot stage raise NotEligible before the destination
is changed, and the job copies them in one stream instead.
"""

from elt.parallel.orchestration import copy
from elt.parallel.tables import source_tables
from elt.parallel.toc import NotEligible

__all__ = ["NotEligible", "copy", "source_tables"]
