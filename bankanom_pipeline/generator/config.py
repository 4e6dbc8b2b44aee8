"""Mock-traffic configuration: a validated superset of the predecessor server's ``config.yaml``.

The predecessor's file loads unchanged; keys it does not have (seed, population, seasonality, extra
templates) get defaults. Unknown keys are rejected so that a typo names itself instead of being ignored.
"""

from __future__ import annotations

import re
import string
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from bankanom_pipeline.generator.placeholders import PLACEHOLDERS
from bankanom_pipeline.metrics_catalogue import METRICS

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")
LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "CRITICAL")
_INSTANCE_SUFFIX = re.compile(r"\s*\(#\d+\)\s*$")


def _known_level(value: str) -> str:
    if value not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value


Level = Annotated[str, AfterValidator(_known_level)]


class ConfigError(ValueError):
    """A mock-traffic configuration that cannot be used; the message names the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogGeneration(_Strict):
    logs_per_second: float = Field(10.0, gt=0, le=1_000_000)
    burst_simulation: bool = True
    burst_frequency_seconds: int = Field(300, gt=0)
    burst_duration_seconds: int = Field(30, ge=0)
    burst_multiplier: float = Field(3.0, ge=1.0, le=100.0)

    @model_validator(mode="after")
    def _burst_fits(self) -> LogGeneration:
        if self.burst_duration_seconds > self.burst_frequency_seconds:
            raise ValueError("burst_duration_seconds must not exceed burst_frequency_seconds")
        return self


class Scenario(_Strict):
    id: str
    name: str
    type: str
    category: str = "uncategorised"
    enabled: bool = True
    frequency_weight: float = Field(ge=0)
    severity: str = "Medium"
    log_level: Level = "WARN"
    source_services: list[str] = Field(min_length=1)
    intensity: dict[str, Any] = Field(default_factory=dict)
    correlation_chain: list[str] = Field(default_factory=list)

    @field_validator("severity")
    @classmethod
    def _known_severity(cls, value: str) -> str:
        if value not in ("Low", "Medium", "High", "Critical"):
            raise ValueError(f"severity must be Low, Medium, High or Critical, got {value!r}")
        return value

    @property
    def base_name(self) -> str:
        """The predecessor wrote an instance number into the name ("Login Failure Spike (#61)")."""
        return _INSTANCE_SUFFIX.sub("", self.name)


ACTORS = ("user", "vpn_user", "staff", "service_account", "system")
DISTRIBUTIONS = {"lognormal": 2, "uniform": 2, "int": 2, "beta": 2, "const": 1, "poisson": 1, "seasonal": 2}


class Template(_Strict):
    template: str
    level: Level
    services: list[str] = Field(min_length=1)
    weight: float = Field(1.0, gt=0)
    actor: str | None = None  # None: "system" for infrastructure services, else "user"
    metrics: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("actor")
    @classmethod
    def _known_actor(cls, value: str | None) -> str | None:
        if value is not None and value not in ACTORS:
            raise ValueError(f"actor must be one of {', '.join(ACTORS)}, got {value!r}")
        return value

    @field_validator("metrics")
    @classmethod
    def _distributions(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for metric, spec in value.items():
            validate_distribution(metric, spec)
        return value

    @field_validator("template")
    @classmethod
    def _renderable(cls, value: str) -> str:
        if any(ord(char) < 32 for char in value):
            raise ValueError("template must not contain control characters")
        for _, name, spec, conversion in string.Formatter().parse(value):
            if name is None:
                continue
            if spec or conversion:
                raise ValueError(f"placeholder {{{name}}} must not carry a format spec or conversion")
            if name not in PLACEHOLDERS:
                known = ", ".join(sorted(PLACEHOLDERS))
                raise ValueError(f"unknown placeholder {{{name}}}; known placeholders: {known}")
        return value

    @cached_property
    def parts(self) -> list[tuple[str, str | None]]:
        """Literal text and placeholder name pairs, in order."""
        return [(text, name) for text, name, _, _ in string.Formatter().parse(self.template)]


class Country(_Strict):
    code: str = Field(pattern=r"^[A-Z]{2}$")
    name: str
    weight: float = Field(gt=0)


class GeographicDistribution(_Strict):
    countries: list[Country] = Field(min_length=1)


class Population(_Strict):
    # The customer base (home countries, addresses, habits) is drawn from this seed, the traffic from
    # MockConfig.seed. None: the traffic seed. Days of one bank share it: a user id must name the same
    # customer on every day a feature's lookback reaches, or yesterday's history is somebody else's.
    seed: int | None = None
    users: int = Field(5000, ge=10, le=10_000_000)
    staff_share: float = Field(0.01, ge=0, le=0.5)
    vpn_share: float = Field(0.05, ge=0, le=1)
    travel_share: float = Field(0.01, ge=0, le=0.5)


class Seasonality(_Strict):
    daily_amplitude: float = Field(0.6, ge=0, lt=1)
    peak_hour_utc: float = Field(14.0, ge=0, lt=24)
    weekend_factor: float = Field(0.75, gt=0, le=2)


class MockConfig(_Strict):
    seed: int = 7
    global_anomaly_rate: float = Field(0.08, ge=0, lt=1)
    log_generation: LogGeneration = LogGeneration()
    service_sources: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]+$")]] = Field(
        min_length=1
    )
    log_levels: dict[str, float]
    anomaly_scenarios: list[Scenario]
    normal_log_templates: list[Template] = Field(min_length=1)
    geographic_distribution: GeographicDistribution
    population: Population = Population()
    seasonality: Seasonality = Seasonality()

    @property
    def customer_seed(self) -> int:
        """The seed the customer base is drawn from (``population.seed``, else the traffic seed)."""
        return self.seed if self.population.seed is None else self.population.seed

    @field_validator("log_levels")
    @classmethod
    def _levels(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(LOG_LEVELS)
        if unknown:
            raise ValueError(f"unknown log level(s) {sorted(unknown)}; known: {', '.join(LOG_LEVELS)}")
        if any(share < 0 for share in value.values()) or sum(value.values()) <= 0:
            raise ValueError("log level shares must be >= 0 and not all zero")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> MockConfig:
        services = set(self.service_sources)
        ids = [scenario.id for scenario in self.anomaly_scenarios]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"anomaly_scenarios: duplicated id(s) {duplicated}")
        for index, scenario in enumerate(self.anomaly_scenarios):
            unknown = set(scenario.source_services) - services
            if unknown:
                raise ValueError(
                    f"anomaly_scenarios.{index}.source_services: {sorted(unknown)} not in service_sources"
                )
        for index, template in enumerate(self.normal_log_templates):
            unknown = set(template.services) - services
            if unknown:
                raise ValueError(
                    f"normal_log_templates.{index}.services: {sorted(unknown)} not in service_sources"
                )
        if self.global_anomaly_rate > 0 and not self.enabled_scenarios:
            raise ValueError("global_anomaly_rate > 0 but no anomaly scenario is enabled with weight > 0")
        return self

    @property
    def enabled_scenarios(self) -> list[Scenario]:
        return [s for s in self.anomaly_scenarios if s.enabled and s.frequency_weight > 0]

    def scenario(self, scenario_id: str) -> Scenario:
        for scenario in self.anomaly_scenarios:
            if scenario.id == scenario_id:
                return scenario
        raise KeyError(scenario_id)


def validate_distribution(metric: str, spec: list[Any]) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known metrics: {', '.join(sorted(METRICS))}")
    if not spec or spec[0] not in DISTRIBUTIONS:
        raise ValueError(f"metrics.{metric}: distribution must start with one of {sorted(DISTRIBUTIONS)}")
    arity = DISTRIBUTIONS[spec[0]]
    if len(spec) != arity + 1 or not all(isinstance(v, int | float) for v in spec[1:]):
        raise ValueError(f"metrics.{metric}: {spec[0]} takes {arity} number(s), got {spec[1:]}")


def _format_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid mock configuration in {source}:"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "<top level>"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  - {location}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<dict>") -> MockConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid mock configuration in {source}: top level must be a mapping")
    try:
        return MockConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_error(error, source)) from None


def load_config(path: str | Path | None = None) -> MockConfig:
    """Load and validate a YAML config; ``None`` means the packaged default."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"mock configuration file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"mock configuration {path} is not valid YAML: {error}") from None
    return parse_config(data, str(path))
