"""Placeholders a log template may use. Metric placeholders render the row's metric value, so that a
message and its ``metrics`` object never disagree."""

# placeholder -> metric column it renders (None: an identifier or word drawn per row)
PLACEHOLDERS: dict[str, str | None] = {
    "user_id": None,
    "ip_address": None,
    "transaction_id": None,
    "order_id": None,
    "session_id": None,
    "customer_id": None,
    "cache_key": None,
    "endpoint": None,
    "channel": None,
    "service_name": None,
    "action": None,
    "topic": None,
    "payload": None,
    "country": None,
    "correlation_event": None,
    "amount": "amount",
    "response_time": "response_time_ms",
    "query_time": "query_time_ms",
    "records_accessed": "records_accessed",
    "bytes_out": "bytes_out",
    "failed_attempts": "failed_attempts",
    "unique_ips": "unique_ips",
    "unique_users": "unique_users",
    "requests_per_second": "requests_per_second",
    "replication_lag": "replication_lag_s",
    "cache_hit_rate": "cache_hit_rate",
    "active_connections": "active_connections",
    "max_connections": "max_connections",
    "risk_score": "risk_score",
    "files_modified": "files_modified",
    "consumer_lag": "consumer_lag",
    "vpn_connections": "vpn_connections",
    "concurrent_sessions": "concurrent_sessions",
}

ENDPOINTS = (
    "/v1/accounts",
    "/v1/accounts/balance",
    "/v1/transfers",
    "/v1/payments",
    "/v1/cards",
    "/v1/statements",
    "/v1/auth/token",
    "/v1/profile",
    "/v1/beneficiaries",
    "/v1/loans",
)
CHANNELS = ("email", "sms", "push")
ACTIONS = ("LOGIN", "TRANSFER", "PROFILE_UPDATE", "CARD_FREEZE", "PASSWORD_CHANGE", "STATEMENT_DOWNLOAD")
TOPICS = ("transactions", "payments", "audit-events", "notifications", "ledger")
SQL_PAYLOADS_DEFAULT = ("' OR 1=1 --", "'; DROP TABLE users; --", "' UNION SELECT * FROM passwords --")
