import pytest
import yaml

from bankanom_pipeline.generator.config import ConfigError, load_config, parse_config
from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.render import to_json_lines
from tests.conftest import DAY_START, FIXTURES, small


def test_predecessor_config_loads_unchanged(predecessor_config):
    assert len(predecessor_config.anomaly_scenarios) == 16
    assert [s.frequency_weight for s in predecessor_config.anomaly_scenarios] == [
        40,
        35,
        30,
        25,
        25,
        20,
        15,
        10,
        15,
        15,
        10,
        8,
        5,
        5,
        3,
        2,
    ]
    assert predecessor_config.anomaly_scenarios[0].base_name == "Login Failure Spike"
    assert len(predecessor_config.service_sources) == 11
    assert predecessor_config.log_generation.logs_per_second == 10


def test_default_config_is_a_superset(config, predecessor_config):
    assert [s.id for s in config.anomaly_scenarios] == [s.id for s in predecessor_config.anomaly_scenarios]
    assert config.service_sources == predecessor_config.service_sources
    predecessor_templates = {t.template for t in predecessor_config.normal_log_templates}
    assert predecessor_templates <= {t.template for t in config.normal_log_templates}


def _raw():
    return yaml.safe_load((FIXTURES / "predecessor-mock-config.yaml").read_text())


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(logs_per_secnd=5), "logs_per_secnd"),
        (lambda d: d["log_generation"].update(logs_per_second=-1), "log_generation.logs_per_second"),
        (
            lambda d: d["anomaly_scenarios"][2].update(frequency_weight=-3),
            "anomaly_scenarios.2.frequency_weight",
        ),
        (lambda d: d["anomaly_scenarios"][0].update(log_level="LOUD"), "anomaly_scenarios.0.log_level"),
        (
            lambda d: d["anomaly_scenarios"][1].update(source_services=["nope"]),
            "anomaly_scenarios.1.source_services",
        ),
        (
            lambda d: d["normal_log_templates"][0].update(template="Hi {nobody}"),
            "normal_log_templates.0.template",
        ),
        (lambda d: d["log_levels"].update(NOISY=0.1), "log_levels"),
        (lambda d: d.update(global_anomaly_rate=1.5), "global_anomaly_rate"),
    ],
)
def test_bad_config_names_the_key(mutate, expected):
    data = _raw()
    mutate(data)
    with pytest.raises(ConfigError) as error:
        parse_config(data, "test.yaml")
    assert expected in str(error.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("global_anomaly_rate: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("which", ["config", "predecessor_config"])
def test_every_template_renders(which, request):
    """The predecessor crashed on its own login template; here every template renders, placeholders filled."""
    cfg = small(request.getfixturevalue(which), rate=100.0)
    generator = Generator(cfg)
    frame = generator.generate(DAY_START, DAY_START + 1800)
    used = set(frame["template"].unique().to_list())
    normal = {generator.vocab["template"].index[t.template] for t in cfg.normal_log_templates}
    assert normal <= used, "every normal template is drawn in 30 minutes at 100 lines/s"
    lines = to_json_lines(frame, generator)
    assert not lines.str.contains(r"\{[a-z_]+\}").any(), "a placeholder was left unrendered"
    assert not lines.str.contains("unknown").any()
