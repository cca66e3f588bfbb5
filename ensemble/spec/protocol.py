"""The custom search attributes Ensemble keeps on its runs (Temporal visibility), shared by the
workflows that set them and the clients that query them. Imports nothing but temporalio.common."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

# Which flow a run is of.
FLOW = SearchAttributeKey.for_keyword("EnsembleFlow")
# While a run waits on people: the names of its open gates, everyone who may decide on them now,
# and the open gates' details as JSON (what `starter.py pending` lists).
GATES = SearchAttributeKey.for_keyword_list("EnsembleGates")
APPROVERS = SearchAttributeKey.for_keyword_list("EnsembleApprovers")
PENDING = SearchAttributeKey.for_text("EnsemblePending")
# Runs seeded from another one (docs/failures.md): the failed run a redrive resumes, which takes
# that run off the dead-letter queue, and the run a fork starts from.
REDRIVE_OF = SearchAttributeKey.for_keyword("EnsembleRedriveOf")
FORK_OF = SearchAttributeKey.for_keyword("EnsembleForkOf")

ALL = [FLOW, GATES, APPROVERS, PENDING, REDRIVE_OF, FORK_OF]
