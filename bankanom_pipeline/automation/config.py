"""The automation settings (``automation.yaml``), validated so that a typo names its key."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PATH = Path(__file__).with_name("automation.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Landing(_Strict):
    interval_seconds: int = Field(ge=1)
    live_day_close_seconds: int = Field(ge=0)


class Automation(_Strict):
    interval_seconds: int = Field(ge=5)


class Drift(_Strict):
    interval_seconds: int = Field(ge=1)
    psi_threshold: float = Field(gt=0)
    bins: int = Field(ge=2, le=100)
    min_events: int = Field(ge=1)


class Schedules(_Strict):
    scoring_catchup_cron: str
    retrain_cron: str
    daily_pipeline_cron: str


class Alerts(_Strict):
    webhook_env: str


class AutomationConfig(_Strict):
    landing: Landing
    automation: Automation
    drift: Drift
    schedules: Schedules
    alerts: Alerts


def load_automation_config(path: str | Path = DEFAULT_PATH) -> AutomationConfig:
    config = AutomationConfig.model_validate(yaml.safe_load(Path(path).read_text()))
    interval = os.environ.get("BANKANOM_SENSOR_INTERVAL_SECONDS")
    if interval:
        seconds = int(interval)
        config = config.model_copy(
            update={
                "landing": config.landing.model_copy(update={"interval_seconds": seconds}),
                "automation": config.automation.model_copy(update={"interval_seconds": max(5, seconds)}),
                "drift": config.drift.model_copy(update={"interval_seconds": seconds}),
            }
        )
    return config


@cache
def default_automation_config() -> AutomationConfig:
    return load_automation_config()
