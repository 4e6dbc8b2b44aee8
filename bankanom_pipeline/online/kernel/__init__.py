"""The compiled engine's kernel (docs/online.md, "Compiled engine"): prepared events, strictly one at a
time in the batch's ``(ts, event_id)`` order, against state held in numpy arrays (their columns:
``online/layout.py``) and one typed dict, compiled with numba.

Each accepted event is a row of the ring (indexed by its sequence number ``seq``, ``slot = seq & mask``)
holding its values and, per kind of list, the ``seq`` of the same entity's next and previous events: each
entity's events are a linked list through the ring. An entity's windows are a start ``lo`` on that list
and running aggregates; an event's features are the aggregates after the windows are advanced to its time,
plus its own values, as the Python engine's running windows gave them.

The modules, by concern: ``lists`` (the lists and counted windows, an event's place in a list),
``windows`` (each kind of entity's windows advanced), ``formulas`` (the arithmetic every reading shares),
``step`` (``run``: the in-order step), ``read`` (the features from the events before a place: ``peek``),
``late`` (late events spliced in; ``ties``), ``sweep`` (the hourly sweep), ``jit`` (numba's cache over
all of them). The entry points are imported here.
"""

from bankanom_pipeline.online.kernel.late import ties
from bankanom_pipeline.online.kernel.read import peek
from bankanom_pipeline.online.kernel.step import run
from bankanom_pipeline.online.kernel.sweep import sweep

__all__ = ["peek", "run", "sweep", "ties"]
