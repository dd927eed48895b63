import pytest

from grades import ConfigError, GradESConfig
from grades.methods import build_method


@pytest.mark.parametrize("kwargs,field", [
    ({"tau": -1.0}, "tau"),
    ({"tau": float("nan")}, "tau"),
    ({"tau": 1.0, "alpha": 1.0}, "alpha"),
    ({"tau": 1.0, "alpha": -0.1}, "alpha"),
    ({"tau": 1.0, "signal": "grad_delta"}, "signal"),
    ({"tau": 1.0, "check_interval": 0}, "check_interval"),
    ({"tau": 1.0, "max_frozen_ratio": 0.0}, "max_frozen_ratio"),
    ({"tau": 1.0, "buffer_dtype": "fp8"}, "buffer_dtype"),
    ({"tau": 1.0, "sample_fraction": 2.0}, "sample_fraction"),
    ({"vision_tau": -2.0, "language_tau": 1.0}, "vision_tau"),
    ({}, "tau"),
])
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        GradESConfig(**kwargs)
    assert f"GradESConfig.{field} " in str(e.value)


def test_unknown_signal_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'grad_delta_l1'"):
        GradESConfig(tau=1.0, signal="grad_delta")


def test_unknown_field_and_method():
    with pytest.raises(ConfigError, match="unknown parameter 'taus'.*did you mean 'tau'"):
        build_method({"name": "grades", "taus": 1.0})
    with pytest.raises(ConfigError, match="method.name = 'grads' is unknown.*did you mean 'grades'"):
        build_method({"name": "grads"})


def test_tower_taus_and_grace():
    cfg = GradESConfig(language_tau=2.0, vision_tau=0.5, alpha=0.3)
    assert cfg.tau_for("language") == 2.0 and cfg.tau_for("vision") == 0.5
    assert cfg.grace_steps(100) == 30 and GradESConfig(tau=1, alpha=0).grace_steps(100) == 1
