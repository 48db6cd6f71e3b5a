"""The flat public API: every name it lists resolves, the lazily imported ones included."""

import purl_jax


def test_every_public_name_resolves():
    names = [n for n in dir(purl_jax) if not n.startswith("_")]
    assert {"prune", "Evaluator", "FRONT_BASELINES", "at_budget"} <= set(names)
    for name in names:
        assert getattr(purl_jax, name) is not None, name
