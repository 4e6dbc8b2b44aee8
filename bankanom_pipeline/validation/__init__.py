"""Validation of raw logs: typed parsing, Great Expectations rules, quarantine."""
