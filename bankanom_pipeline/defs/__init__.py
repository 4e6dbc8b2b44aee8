"""Every Dagster object of bankanom, one folder per domain, each with its own ``definitions.py``;
``bankanom_pipeline.definitions`` merges them. Nothing outside this package (and the CLI) imports
Dagster or Great Expectations (import-linter contracts in pyproject.toml)."""
