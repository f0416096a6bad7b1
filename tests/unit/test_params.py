"""The parameter merge: order of layers, deep merge, striv's dotted keys, provenance, required params."""

from __future__ import annotations

import pytest

from services.renderer.params import (
    DimensionParams,
    MissingRequiredParams,
    ParamLayer,
    ParamsError,
    merge_layers,
    merge_params,
    nest_dotted_keys,
)

SECRET = {"type": "secret", "encrypted": "c2VjcmV0"}


def test_each_layer_overrides_the_one_before_defaults_dimensions_job_run() -> None:
    merged = merge_params(
        defaults={"a": "default", "b": "default", "c": "default", "d": "default"},
        dimensions=[DimensionParams("customer", 1, "acme", {"b": "acme", "c": "acme", "d": "acme"})],
        job={"c": "job", "d": "job"},
        overrides={"d": "run"},
    )
    assert merged.params == {"a": "default", "b": "acme", "c": "job", "d": "run"}
    assert merged.provenance == {"a": "default", "b": "dimension:customer=acme", "c": "job", "d": "run"}


def test_higher_priority_dimension_overrides_lower_whatever_order_the_job_lists_them() -> None:
    env = DimensionParams("env", 10, "prod", {"host": "prod.example", "region": "eu"})
    customer = DimensionParams("customer", 1, "acme", {"host": "acme.example", "tier": "gold"})
    for dimensions in ([env, customer], [customer, env]):
        merged = merge_params(defaults={}, dimensions=dimensions)
        assert merged.params == {"host": "prod.example", "region": "eu", "tier": "gold"}
        assert merged.provenance["host"] == "dimension:env=prod"
        assert merged.provenance["tier"] == "dimension:customer=acme"


def test_dimensions_of_equal_priority_apply_in_name_order_so_the_later_name_wins() -> None:
    zone = DimensionParams("zone", 5, "north", {"x": "zone"})
    area = DimensionParams("area", 5, "west", {"x": "area"})
    merged = merge_params(defaults={}, dimensions=[zone, area])
    assert merged.params == {"x": "zone"}
    assert merged.provenance == {"x": "dimension:zone=north"}


def test_nested_objects_merge_leaf_by_leaf_and_provenance_names_each_leaf() -> None:
    merged = merge_params(
        defaults={"db": {"host": "localhost", "port": 5432, "opts": {"ssl": False}}},
        job={"db": {"host": "db.acme", "opts": {"timeout": 5}}},
    )
    assert merged.params == {"db": {"host": "db.acme", "port": 5432, "opts": {"ssl": False, "timeout": 5}}}
    assert merged.provenance == {
        "db.host": "job",
        "db.opts.ssl": "default",
        "db.opts.timeout": "job",
        "db.port": "default",
    }


def test_dotted_keys_nest_into_objects_before_merging_like_striv() -> None:
    merged = merge_params(
        defaults={"db": {"host": "localhost", "port": 5432}},
        dimensions=[DimensionParams("customer", 1, "acme", {"db.host": "db.acme"})],
        overrides={"db.pool.size": 3},
    )
    assert merged.params == {"db": {"host": "db.acme", "port": 5432, "pool": {"size": 3}}}
    assert merged.provenance == {
        "db.host": "dimension:customer=acme",
        "db.pool.size": "run",
        "db.port": "default",
    }


def test_dotted_and_nested_spellings_in_one_layer_combine() -> None:
    assert nest_dotted_keys({"db": {"port": 1}, "db.host": "h", "a.b.c": 1}) == {
        "db": {"port": 1, "host": "h"},
        "a": {"b": {"c": 1}},
    }


def test_one_leaf_set_twice_in_one_layer_is_refused_naming_the_key() -> None:
    with pytest.raises(ParamsError, match=r"'db\.host' is set twice in job"):
        merge_layers([ParamLayer("job", {"db": {"host": "a"}, "db.host": "b"})])


def test_a_dotted_key_below_a_scalar_in_the_same_layer_is_refused() -> None:
    with pytest.raises(
        ParamsError, match=r"'db\.host' in default conflicts with the value already set for 'db'"
    ):
        merge_layers([ParamLayer("default", {"db": "postgres://x", "db.host": "b"})])


def test_a_key_with_an_empty_part_is_refused() -> None:
    with pytest.raises(ParamsError, match="empty part"):
        nest_dotted_keys({"db..host": 1})


def test_a_scalar_replaces_a_whole_object_and_its_provenance() -> None:
    merged = merge_params(defaults={"db": {"host": "h", "port": 1}}, job={"db": "sqlite:///x"})
    assert merged.params == {"db": "sqlite:///x"}
    assert merged.provenance == {"db": "job"}


def test_an_object_replaces_a_scalar() -> None:
    merged = merge_params(defaults={"db": "sqlite:///x"}, job={"db.host": "h"})
    assert merged.params == {"db": {"host": "h"}}
    assert merged.provenance == {"db.host": "job"}


def test_arrays_are_replaced_not_concatenated() -> None:
    merged = merge_params(defaults={"args": ["a", "b"]}, overrides={"args": ["c"]})
    assert merged.params == {"args": ["c"]}
    assert merged.provenance == {"args": "run"}


def test_an_empty_object_in_a_later_layer_keeps_what_was_there() -> None:
    merged = merge_params(defaults={"labels": {"team": "ops"}}, job={"labels": {}})
    assert merged.params == {"labels": {"team": "ops"}}
    assert merged.provenance == {"labels.team": "default"}


def test_a_secret_is_one_leaf_never_merged_into() -> None:
    merged = merge_params(
        defaults={"db": {"password": {"type": "secret", "encrypted": "old", "note": "x"}}},
        job={"db.password": SECRET},
    )
    assert merged.params == {"db": {"password": SECRET}}
    assert merged.provenance == {"db.password": "job"}


def test_an_ordinary_object_with_a_type_key_still_merges_key_by_key() -> None:
    merged = merge_params(
        defaults={"storage": {"type": "s3", "bucket": "shared"}}, job={"storage.bucket": "acme"}
    )
    assert merged.params == {"storage": {"type": "s3", "bucket": "acme"}}
    assert merged.provenance == {"storage.bucket": "job", "storage.type": "default"}


def test_merging_leaves_the_callers_params_untouched() -> None:
    defaults = {"db": {"host": "h"}}
    job = {"db": {"port": 1}}
    merge_params(defaults=defaults, job=job)
    assert defaults == {"db": {"host": "h"}} and job == {"db": {"port": 1}}


def test_missing_required_param_names_the_param_and_the_job() -> None:
    with pytest.raises(MissingRequiredParams) as raised:
        merge_params(defaults={"a": 1}, required=["a", "db.host"], job_id="5f0c")
    assert str(raised.value) == "required param 'db.host' missing for job 5f0c"
    assert raised.value.missing == ["db.host"]


def test_required_params_filled_by_any_layer_pass_and_null_counts_as_missing() -> None:
    merged = merge_params(
        defaults={"token": None, "db.host": None},
        dimensions=[DimensionParams("customer", 1, "acme", {"db.host": "h"})],
        required=["db.host"],
    )
    assert merged.params["db"] == {"host": "h"}
    with pytest.raises(MissingRequiredParams, match=r"required params 'db\.host', 'token' missing$"):
        merge_params(defaults={"token": None, "db.host": None}, required=["db.host", "token"])
