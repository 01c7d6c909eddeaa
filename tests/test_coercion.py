"""agents/coercion.py: one reading of override values, for agent configs and env parameters."""

import dataclasses
import math

import numpy as np
import pytest

import envs
from agents.base import ConfigError, build_config
from agents.coercion import CoercionError, coerce, field_types


@pytest.mark.parametrize(
    "annotation, value, expected",
    [
        (bool, "true", True),
        (bool, "FALSE", False),
        (bool, " 1 ", True),
        (bool, "0", False),
        (bool, True, True),
        (bool, 0, False),
        (bool, np.bool_(True), True),
        (int, "42", 42),
        (int, "-3", -3),
        (int, "1e4", 10_000),
        (int, 7.0, 7),
        (int, "123456789012345678901", 123456789012345678901),  # exact, not via a float
        (float, "0.5", 0.5),
        (float, " 1e-3", 1e-3),
        (float, 2, 2.0),
        (str, "expectile", "expectile"),
        (tuple[int, ...], "64,64", (64, 64)),
        (tuple[int, ...], "(64, 64)", (64, 64)),
        (tuple[float, ...], "[0.5, 1]", (0.5, 1.0)),
        (tuple[float, ...], [0, 1], (0.0, 1.0)),
        (tuple[float, ...], 2.0, (2.0,)),
        (tuple[float, ...], "()", ()),
        (tuple[int, float], "3, 0.5", (3, 0.5)),
        (tuple[float, ...] | None, "none", None),
        (tuple[float, ...] | None, None, None),
        (tuple[float, ...] | None, "0.1,0.3", (0.1, 0.3)),
        (int | None, "5", 5),
    ],
)
def test_values_read_as_their_declared_types(annotation, value, expected):
    result = coerce("key", value, annotation)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "annotation, value, message",
    [
        (bool, "yes", "flag='yes' is not a boolean; valid: true, false, 1 or 0 (any case)"),
        (bool, "on", "flag='on' is not a boolean"),
        (bool, 1.0, "flag=1.0 is not a boolean"),
        (bool, 2, "flag=2 is not a boolean"),
        (int, "big", "flag='big' is not an integer; valid: a whole number such as 3 or 1e4"),
        (int, "2.5", "flag='2.5' is not an integer"),
        (int, 2.5, "flag=2.5 is not an integer"),
        (int, "inf", "flag='inf' is not an integer"),
        (int, True, "flag=True is not an integer"),
        (float, "x", "flag='x' is not a number; valid: a finite number such as 0.5 or 1e-3"),
        (float, "inf", "flag='inf' is not a finite number"),
        (float, "-Infinity", "flag='-Infinity' is not a finite number"),
        (float, math.nan, "flag=nan is not a finite number"),
        (float, False, "flag=False is not a number"),
        (tuple[int, ...], "64,x", "flag[1]='x' is not an integer"),
        (tuple[float, ...], (0.0, math.inf), "flag[1]=inf is not a finite number"),
        (tuple[int, float], "1,2,3", "flag='1,2,3' has 3 items; valid: 2 comma-separated"),
        (
            tuple[float, ...] | None,
            "0.1,x",
            (
                "flag='0.1,x' fits none of its types; valid: comma-separated values, each a "
                "finite number such as 0.5 or 1e-3, or none"
            ),
        ),
        (
            np.ndarray,
            "1,2",
            "flag='1,2' cannot be given as text; valid: a value of type ndarray, set in code",
        ),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_valid(annotation, value, message):
    with pytest.raises(CoercionError) as raised:
        coerce("flag", value, annotation)
    assert str(raised.value).startswith(message), str(raised.value)
    assert "\n" not in str(raised.value)


def test_values_of_types_without_a_rule_pass_as_they_are():
    array = np.zeros(3)
    assert coerce("key", array, np.ndarray) is array


def test_string_annotations_are_resolved():
    @dataclasses.dataclass(frozen=True)
    class Later:
        flag: "bool" = False
        sizes: "tuple[int, ...]" = ()

    assert field_types(Later) == {"flag": bool, "sizes": tuple[int, ...]}


@dataclasses.dataclass(frozen=True)
class _Fields:
    """The field types agent configs and env parameters both have."""

    flag: bool = False
    count: int = 1
    rate: float = 0.1
    sizes: tuple[float, ...] = (1.0,)


# (field, text) -> value, for a config field and the env parameter of the same type.
_ACCEPTED = [
    ("flag", "True", True),
    ("flag", "0", False),
    ("count", "3", 3),
    ("count", "1e1", 10),
    ("rate", "0.25", 0.25),
    ("sizes", "(0.5, 2)", (0.5, 2.0)),
]
_REFUSED = [
    ("flag", "yes", "flag='yes' is not a boolean"),
    ("flag", "2", "flag='2' is not a boolean"),
    ("count", "2.5", "count='2.5' is not an integer"),
    ("rate", "nan", "rate='nan' is not a finite number"),
    ("sizes", "1,x", "sizes[1]='x' is not a number"),
]
# The same types in VariableMagnitude-mouse: cued (bool), delay (int), magnitudes (floats), and
# StochasticChain's p (float).
_ENV_FIELDS = {
    "flag": ("VariableMagnitude-mouse", "cued"),
    "count": ("VariableMagnitude-mouse", "delay"),
    "rate": ("StochasticChain", "p"),
    "sizes": ("VariableMagnitude-mouse", "magnitudes"),
}


@pytest.mark.parametrize("field, text, expected", _ACCEPTED)
def test_config_and_env_paths_accept_the_same_text(field, text, expected):
    assert getattr(build_config(_Fields, {field: text}), field) == expected
    env_name, param = _ENV_FIELDS[field]
    overrides = {param: text}
    if param == "magnitudes":  # one probability per magnitude, for the env's own validation
        overrides["probs"] = "0.5,0.5"
    _, params = envs.make(env_name, **overrides)
    assert getattr(params, param) == expected


@pytest.mark.parametrize("field, text, message", _REFUSED)
def test_config_and_env_paths_refuse_the_same_text_alike(field, text, message):
    with pytest.raises(ConfigError) as config_error:
        build_config(_Fields, {field: text})
    assert str(config_error.value).startswith(message)
    env_name, param = _ENV_FIELDS[field]
    with pytest.raises(envs.EnvError) as env_error:
        envs.make(env_name, **{param: text})
    env_message = message.replace(field, param, 1)
    assert str(env_error.value).startswith(f"{env_name}: {env_message}"), str(env_error.value)
