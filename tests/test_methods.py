"""The method registry: every table, config enum and label agrees with it."""

import yaml

from silentvae.report import claims
from silentvae.report import paper_values as pv
from silentvae.training.methods import FIXED_METHODS, LEARNABLE_METHODS, METHODS, label, with_sg
from silentvae.pipeline.plan import SCHEMA_PATH
from silentvae.training.run import RunConfig


def test_schema_enums_are_the_registry():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]
    for experiment in ("fixed", "learnable"):
        enum = schema[f"{experiment}_variance"]["properties"]["methods"]["items"]["enum"]
        assert enum == list(METHODS[experiment]), experiment


def test_every_method_is_a_valid_run_config():
    for methods in METHODS.values():
        for method in methods.values():
            extra = {"anneal_rate": 0.1} if method.baseline else {}
            cfg = RunConfig.from_dict({"experiment": method.experiment, **method.run_fields(), **extra})
            assert (cfg.latent, cfg.estimator, cfg.silent) == (method.latent, method.estimator, method.silent_decoder)


def test_fixed_sg_and_learnable_none_sg_have_distinct_ids():
    """Fixed "sg" (the closed form as the only estimator) and learnable "None + SG" (estimator none, silent
    decoder) are different methods with different ids."""
    assert {m.estimator for m in FIXED_METHODS.values() if m.id.startswith("sg_")} == {"sg"}
    none_sg = [m for m in LEARNABLE_METHODS.values() if m.estimator == "none"]
    assert {m.id for m in none_sg} == {"none_sg_gaussian", "none_sg_bernoulli"}
    assert all(m.silent_decoder and m.grid == "lr_cutoff" for m in none_sg)
    assert not set(FIXED_METHODS) & {m.id for m in none_sg}


def test_baselines_and_grids():
    for method in LEARNABLE_METHODS.values():
        if method.baseline is not None:
            baseline = LEARNABLE_METHODS[method.baseline]
            assert (baseline.estimator, baseline.latent, baseline.silent_decoder) == \
                (method.estimator, method.latent, False)
            assert method.grid == "anneal_cutoff" and with_sg(method.baseline) == method.id
    assert claims.SAMPLING_ESTIMATORS == ("reparam", "gumbel", "reinforce")
    assert all(m.grid == "lr" and m.baseline is None for m in FIXED_METHODS.values())


def test_paper_tables_use_the_registry_ids():
    assert set(pv.TABLE1) == set(FIXED_METHODS) == set(pv.TABLE2)
    for table in (pv.TABLE3, pv.TABLE4, pv.TABLE9):
        assert all(set(row) == set(LEARNABLE_METHODS) for row in table.values())
    rows = {m for _, without, with_sg_id in pv.LEARNABLE_ROWS for m in (without, with_sg_id) if m}
    assert rows == set(LEARNABLE_METHODS)
    assert [label for label, _, _ in pv.LEARNABLE_ROWS if not label.endswith("None")] == \
        [LEARNABLE_METHODS[w].label for _, w, _ in pv.LEARNABLE_ROWS if w]


def test_labels():
    assert label("fixed", "sg_gaussian") == "Continuous Silent Gradients"
    assert label("learnable", "none_sg_bernoulli") == "Discrete None + SG"
    assert label("learnable", "unknown") == "unknown"
