"""Scenario matching against the hand-written profiles, on crafted incidents."""

import numpy as np
import pytest

from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.detection.rca import (
    default_catalogue,
    load_catalogue,
    match_scenario,
    tell_tale_coverage,
)

FEATURES = default_detection_config().feature_names


def dev(**moved):
    out = dict.fromkeys(FEATURES, 0.0)
    out.update(moved)
    return out


def test_every_enabled_scenario_has_a_profile_with_real_features(config):
    catalogue = load_catalogue(mock_config=config)
    assert catalogue.ids == [s.id for s in config.enabled_scenarios]
    for profile in catalogue.profiles:
        assert profile.templates and profile.features, profile.id
        unknown = set(profile.features) - set(FEATURES)
        assert not unknown, f"{profile.id}: {unknown} are not detection features"
        # follow-up steps and services come from the generator config, not from the YAML
        scenario = config.scenario(profile.id)
        assert profile.services == tuple(scenario.source_services)
        assert profile.follow_ups == tuple(scenario.correlation_chain)


def test_a_missing_profile_is_an_error(config, tmp_path):
    text = (load_catalogue.__globals__["DEFAULT_PATH"]).read_text()
    broken = tmp_path / "profiles.yaml"
    broken.write_text(text.replace("  BANK-016:", "  BANK-999:"))
    with pytest.raises(ValueError, match="BANK-016"):
        load_catalogue(broken, mock_config=config)


LOGIN_FAILED = "Login failed for user <id> from <id>: invalid credentials"


def test_brute_force_vs_login_spike_vs_stuffing():
    # one victim, one IP, failures counting up
    spike = match_scenario(
        {"auth-service": 6, "api-gateway": 4},
        {LOGIN_FAILED: 10},
        dev(user_failed_logins_10m=8.0, failed_attempts=12.0, success_rate=-9.0, user_events_10m=4.0),
        user_count=1,
        ip_count=1,
    )
    assert spike.scenario_id == "BANK-001" and spike.confidence > 0.8
    # a /24 pool against many users, with velocity alerts from fraud detection
    brute = match_scenario(
        {"auth-service": 12, "api-gateway": 10, "fraud-detection-service": 8},
        {
            LOGIN_FAILED: 18,
            "Authentication rate limit exceeded for <id>": 4,
            "Login velocity alert for <id>: # users": 8,
        },
        dev(
            ip_distinct_users_10m=20.0,
            network_distinct_users_10m=30.0,
            attempts_per_minute=25.0,
            success_rate=-9.0,
        ),
        user_count=30,
        ip_count=10,
    )
    assert brute.scenario_id == "BANK-002" and brute.confidence > 0.8
    # many proxies, each line from another address, a few successes
    stuffing = match_scenario(
        {"auth-service": 9, "api-gateway": 9},
        {LOGIN_FAILED: 17, "User <id> logged in successfully from <id>": 1},
        dev(
            network_distinct_ips_10m=12.0,
            network_distinct_users_10m=9.0,
            attempts_per_minute=20.0,
            success_rate=-4.0,
        ),
        user_count=18,
        ip_count=16,
    )
    assert stuffing.scenario_id == "BANK-004"
    assert {r[0] for r in brute.runners_up} & {"BANK-001", "BANK-004"}


@pytest.mark.parametrize(
    ("expected", "services", "templates", "moved", "users", "ips", "no_user"),
    [
        (
            "BANK-016",
            {"monitoring-agent": 3, "postgres-db": 2},
            {
                "Mass file modification on <service>: # files changed": 3,
                "Tablespace files unreadable on x": 2,
            },
            {"files_modified": 40.0, "cpu_percent": 8.0},
            0,
            2,
            1.0,
        ),
        (
            "BANK-012",
            {"postgres-db": 4},
            {"Replica is #s behind primary": 4},
            {"replication_lag_s": 12.0, "service_max_replication_lag_s": 12.0},
            0,
            1,
            1.0,
        ),
        (
            "BANK-015",
            {"user-management-service": 3, "postgres-db": 2},
            {
                "Scheduled export of # records completed (# bytes)": 3,
                "Large result set of # rows returned to <id>": 2,
            },
            {"records_accessed": 30.0, "bytes_out": 30.0, "user_bytes_out_30m": 20.0},
            1,
            2,
            0.0,
        ),
        (
            "BANK-009",
            {"api-gateway": 6, "transaction-service": 5},
            {"Upstream timeout calling /v#/cards after #ms": 8, "Upstream call to /v#/loans slow: #ms": 3},
            {"timeout_rate": 20.0, "response_time_ms": 6.0, "service_max_timeout_rate": 10.0},
            11,
            11,
            0.0,
        ),
    ],
)
def test_infrastructure_and_data_scenarios(expected, services, templates, moved, users, ips, no_user):
    match = match_scenario(services, templates, dev(**moved), users, ips, no_user_share=no_user)
    assert match.scenario_id == expected
    assert match.scenario_name == default_catalogue().profiles[default_catalogue().ids.index(expected)].name
    assert 0.5 < match.confidence <= 1.0


def test_follow_up_steps_decide_between_look_alikes():
    # a session seen twice; nothing else moved: the follow-up step names the scenario
    common = {"User session <id> validated": 2}
    hijack = match_scenario(
        {"auth-service": 3}, {**common, "Follow-up action session-termination started": 1}, dev(), 1, 2
    )
    travel = match_scenario(
        {"auth-service": 3}, {**common, "Follow-up action travel-verification started": 1}, dev(), 1, 2
    )
    assert hijack.scenario_id == "BANK-007" and travel.scenario_id == "BANK-005"


def test_confidence_is_low_when_nothing_fits():
    match = match_scenario(
        {"notification-service": 2}, {"Notification sent to user <id> via sms": 2}, dev(), 2, 2
    )
    assert match.confidence < 0.5
    assert len(match.runners_up) == 2


def test_missing_tell_tales_count_against_a_scenario_in_a_large_incident():
    # one /24 of a stuffing run as the detector sees it: 23 failures from ten proxies, nothing else. Brute
    # force fits every trait here (its per-IP features even moved more), except its rate-limit and
    # velocity lines, which a run this long would have logged.
    moved = dev(
        network_distinct_users_10m=20.0,
        network_distinct_ips_10m=2.0,
        ip_distinct_users_10m=5.0,
        ip_failed_logins_10m=5.0,
        network_failed_logins_10m=10.0,
        attempts_per_minute=25.0,
        unique_users=20.0,
        success_rate=-9.0,
        failed_attempts=5.0,
    )
    services = {"auth-service": 12, "api-gateway": 11}
    assert match_scenario(services, {LOGIN_FAILED: 23}, moved, 22, 10).scenario_id == "BANK-004"
    # what the rule changed: without it, this incident was named brute force
    unjudged = match_scenario(services, {LOGIN_FAILED: 23}, moved, 22, 10, catalogue=_without_absence())
    assert unjudged.scenario_id == "BANK-002"
    with_tell_tale = {LOGIN_FAILED: 19, "Authentication rate limit exceeded for <id>": 4}
    assert match_scenario(services, with_tell_tale, moved, 22, 10).scenario_id == "BANK-002"
    # below min_events_for_absence lines nothing is judged missing
    few = {LOGIN_FAILED: default_catalogue().matching.min_events_for_absence - 1}
    assert match_scenario({"auth-service": 9}, few, moved, 9, 4).confidence == pytest.approx(
        match_scenario({"auth-service": 9}, few, moved, 9, 4, catalogue=_without_absence()).confidence
    )


def _without_absence():
    from dataclasses import replace

    catalogue = default_catalogue()
    return replace(catalogue, matching=replace(catalogue.matching, min_events_for_absence=10**9))


def test_tell_tale_coverage():
    catalogue = default_catalogue()
    templates = [LOGIN_FAILED, "Authentication rate limit exceeded for <id>", "Replica is #s behind primary"]
    counts = np.array([[20, 0, 0], [16, 4, 0], [0, 0, 3]], dtype=float)
    cov = dict(zip(catalogue.ids, tell_tale_coverage(counts, templates, catalogue).T, strict=True))
    assert list(cov["BANK-001"]) == [1.0, 1.0, 1.0]  # no template of its own: never penalised
    assert list(cov["BANK-002"]) == [0.0, 0.5, 0.0]  # rate limit seen, velocity alert not
    assert list(cov["BANK-012"]) == [0.0, 0.0, 1.0]
