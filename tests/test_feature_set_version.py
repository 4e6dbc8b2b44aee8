"""The feature-set version is a digest of the files that define the features, and only of what in them
defines the features."""

import shutil

from bankanom_pipeline.online.version import FEATURE_SET_VERSION, feature_set_digest
from bankanom_pipeline.settings import sql_root


def test_the_version_is_the_digest_of_the_packaged_feature_sql():
    assert feature_set_digest(sql_root()) == FEATURE_SET_VERSION
    assert len(FEATURE_SET_VERSION) == 12 and int(FEATURE_SET_VERSION, 16) >= 0


def test_the_version_changes_with_the_sql_and_the_geo_seed_but_not_with_comments_or_other_models(tmp_path):
    root = tmp_path / "sql"
    shutil.copytree(sql_root(), root)
    base = feature_set_digest(root)
    model = root / "features" / "feat_ip_activity.sql"
    text = model.read_text()

    model.write_text("-- a new explanation\n\n" + text.replace("\n", "\n\n", 3))
    assert feature_set_digest(root) == base  # whole-line comments and blank lines define nothing
    (root / "transactions" / "features_transactions.sql").write_text("SELECT 1")
    assert feature_set_digest(root) == base  # the transaction features are not these

    model.write_text(text.replace("10 minutes", "10 minutes ").replace("600000000", "600000001"))
    assert feature_set_digest(root) != base
    model.write_text(text)
    assert feature_set_digest(root) == base
    seed = root / "seeds" / "geo_regions.csv"
    seed.write_text(seed.read_text() + "XX-YYY,XX,0.0,0.0\n")
    assert feature_set_digest(root) != base
