"""The declared hyper-parameter constraints (validate.Interval / Options / Boolean,
check_params) and their use by registry.Configurable."""

import numbers

import numpy as np
import pytest

from as3l_plugin.errors import ConfigError, ParameterError
from as3l_plugin.propagation import BasePropagator, _PROPAGATORS
from as3l_plugin.registry import Registry
from as3l_plugin.selection import BaseSampler, _SAMPLERS
from as3l_plugin.validate import Boolean, Interval, Options, check_params


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _msg(constraints, **values):
    with pytest.raises(ParameterError) as err:
        check_params(_Obj(**values), constraints)
    return err.value.field, str(err.value)


def test_interval_int_uses_check_int_wording():
    spec = {"k": [Interval(int, 1, None)]}
    assert _msg(spec, k="a") == ("k", "k: k='a' must be an int")
    assert _msg(spec, k=np.int64(0)) == ("k", "k: k=0 must be >= 1")
    assert _msg({"k": [Interval(int, 1, 5)]}, k=6) == ("k", "k: k=6 must be in [1, 5]")
    check_params(_Obj(k=np.int32(3)), spec)
    with pytest.raises(ParameterError):
        check_params(_Obj(k=True), spec)


def test_interval_int_with_one_message():
    spec = {"k": [Interval(int, 1, None, message="must be an int >= 1")]}
    assert _msg(spec, k=np.int64(0)) == ("k", "k: k=np.int64(0) must be an int >= 1")
    assert _msg(spec, k=2.0)[1] == "k: k=2.0 must be an int >= 1"
    assert _msg(spec, k=False)[1] == "k: k=False must be an int >= 1"


@pytest.mark.parametrize("interval, text", [
    (Interval(numbers.Real, 0, 10), "must be a float in [0, 10]"),
    (Interval(numbers.Real, 0, 1, closed="neither"), "must be a float in (0, 1)"),
    (Interval(numbers.Real, 0, None, closed="left"), "must be a float >= 0"),
    (Interval(numbers.Real, 0, None, closed="neither"), "must be a float > 0"),
    (Interval(numbers.Real, None, 1, closed="right"), "must be a float <= 1"),
])
def test_interval_real_wording(interval, text):
    assert _msg({"x": [interval]}, x="s")[1] == f"x: x='s' {text}"
    assert _msg({"x": [interval]}, x=float("nan"))[1] == f"x: x=nan {text}"


def test_interval_real_bool_and_finite():
    assert _msg({"x": [Interval(numbers.Real, 0, None)]}, x=True)[1] == \
        "x: x=True must be a float >= 0"
    check_params(_Obj(x=True), {"x": [Interval(numbers.Real, 0, None, bool_ok=True)]})
    fin = {"x": [Interval(numbers.Real, 0, None, closed="neither", finite=True)]}
    assert _msg(fin, x=float("inf"))[1] == "x: x=inf must be a float > 0"
    check_params(_Obj(x=1e300), fin)


def test_options_boolean_none_and_order():
    spec = {"a": [None, Options(("x", "y"))], "b": [Boolean()]}
    check_params(_Obj(a=None, b=np.bool_(False)), spec)
    assert _msg(spec, a="z", b=1) == ("a", "a: a='z' must be one of ('x', 'y')")  # dict order
    assert _msg(spec, a="x", b=1) == ("b", "b: b=1 must be true or false")
    assert _msg({"a": [Options(("x",))]}, a=None)[1] == "a: a=None must be one of ('x',)"


def test_any_of_and_error_class():
    spec = {"v": [Interval(int, 1, None), Options(("auto",))]}
    check_params(_Obj(v="auto"), spec)
    check_params(_Obj(v=3), spec)
    assert _msg(spec, v="x")[1] == "v: v='x' must be an int"  # the first constraint's error
    with pytest.raises(ConfigError, match="must be one of"):
        check_params(_Obj(v="x"), {"v": [Options(("auto",))]}, error=ConfigError)


def test_every_registered_spec_names_parameters():
    for reg in (_SAMPLERS, _PROPAGATORS):
        for name, cls in reg.classes.items():
            assert set(cls._parameter_constraints) <= set(cls._param_names()), name


def test_register_refuses_a_stray_constraint():
    class Bad(BaseSampler):
        _parameter_constraints = {"k": [Interval(int, 1, None)]}

        def __init__(self, *, n=1):
            self.n = n

    with pytest.raises(ParameterError, match="names k, not keyword-only") as err:
        Registry("sampler", BaseSampler).register("bad", Bad)
    assert err.value.field == "cls"


def test_configurable_checks_the_spec():
    class P(BasePropagator):
        _parameter_constraints = {"k": [Interval(int, 1, None)]}

        def __init__(self, *, k=1):
            self.k = k

    reg = Registry("propagator", BasePropagator)
    reg.register("p", P)
    with pytest.raises(ParameterError, match=r"^k: k=0 must be >= 1$"):
        reg.build("p", k=0)
    with pytest.raises(ParameterError, match=r"^k: k=0 must be >= 1$"):
        P(k=0).propagate(np.zeros((3, 2)), [0], [0], 2)
