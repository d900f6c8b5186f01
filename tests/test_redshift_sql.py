"""The Redshift loader's statements, against golden SQL. They have not run on a live cluster
(there is none here): these tests pin what is sent, including the options that keep data from
being silently changed (no TRUNCATECOLUMNS, no ACCEPTINVCHARS, MAXERROR 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jankycron.errors import ConfigError
from jankycron.load.redshift_sql import copy_sql, ident, merge_sql, stage_sql

GOLDEN = Path(__file__).parent / "golden"
MANIFEST = ("s3://acme-staging/jankycron/loads/github_pull_requests/"
            "20261126T114512123456Z-3fa2c1/manifest.json")


def golden(name: str) -> str:
    return (GOLDEN / name).read_text().rstrip("\n")


def test_copy_matches_golden_sql() -> None:
    sql = copy_sql("github_pull_requests", MANIFEST, "arn:aws:iam::123456789012:role/RedshiftLoad",
                   columns=["id", "title", "userId", "__jc_seq"], schema="analytics")
    assert sql == golden("redshift_copy.sql")


def test_noload_has_exactly_the_copy_options_plus_noload() -> None:
    sql = copy_sql("jc_stage", MANIFEST, "default", region="eu-west-1", noload=True)
    assert sql == golden("redshift_noload.sql")
    real = copy_sql("jc_stage", MANIFEST, "default", region="eu-west-1")
    assert sql.splitlines()[:-1] == real.splitlines()


def test_merge_matches_golden_sql() -> None:
    statements = [
        *stage_sql("github_reviews", "jc_stage", "__jc_seq", schema="analytics"),
        *merge_sql("github_reviews", "jc_stage", ["repo", "id", "state", "submitted_at"],
                   ("repo", "id"), "__jc_seq", schema="analytics"),
    ]
    assert "\n".join(s + ";" for s in statements) == golden("redshift_merge.sql")


def test_nothing_that_silently_changes_data_is_ever_sent() -> None:
    sql = copy_sql("t", MANIFEST, "default", noload=True)
    for option in ("TRUNCATECOLUMNS", "ACCEPTINVCHARS", "BLANKSASNULL", "EMPTYASNULL",
                   "ROUNDEC", "FILLRECORD", "IGNOREALLERRORS"):
        assert option not in sql


def test_identifiers_fold_to_lower_case_and_quote_safely() -> None:
    assert ident("userId") == '"userid"'
    assert ident('we"ird; DROP TABLE x') == '"we""ird; drop table x"'
    with pytest.raises(ConfigError, match="127 bytes"):
        ident("x" * 128)


@pytest.mark.parametrize("role", ["arn:aws:iam::123:role/x", "'; DROP TABLE t; --", ""])
def test_a_bad_iam_role_is_refused_before_any_sql(role: str) -> None:
    with pytest.raises(ConfigError, match="IAM_ROLE"):
        copy_sql("t", MANIFEST, role)


def test_only_s3_manifests_and_no_backslashes() -> None:
    with pytest.raises(ConfigError, match="S3"):
        copy_sql("t", "file:///tmp/manifest.json", "default")
    with pytest.raises(ConfigError, match="backslash"):
        copy_sql("t", "s3://b/a\\b/manifest.json", "default")
