"""The flat public API: every name it lists resolves, the lazily imported ones included."""

import purl_jax


def test_every_public_name_resolves():
    names = [n for n in dir(purl_jax) if not n.startswith("_")]
    assert {"prune", "Evaluator", "FRONT_BASELINES", "at_budget"} <= set(names)
    for name in names:
        assert getattr(purl_jax, name) is not None, name


def test_star_import_gives_the_public_api_and_nothing_else():
    namespace: dict = {}
    exec("from purl_jax import *", namespace)
    public = set(namespace) - {"__builtins__"}
    assert {"prune", "purl_defaults", "constrained_defaults", "load_config", "get_model"} <= public
    assert not {"importlib", "budgets", "masks", "annotations"} & public  # no modules, no imports
