"""Live stream scoring (``bankanom stream``): the source, the scorer that owns the online engine, the live
store the API reads, live incidents. docs/live.md."""
