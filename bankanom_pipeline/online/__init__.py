"""Online features: the features of ``features_events`` computed event by event (no Dagster, no DuckDB
query per event), equal to the SQL's by the definition in docs/features.md.

``engine`` is the per-event API over the compiled engine (``compiled``: prepare with polars, the numba
``kernel``), which keeps each entity's state and computes an event's features from it; ``version`` says which
definition of the features the SQL, the engine and a model are built with. Nothing is imported here:
the modules are loaded by whoever uses them.
"""
