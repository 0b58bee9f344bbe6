from __future__ import annotations

import pandas as pd
import pytest

from fashion_retrieval.data.records import ColumnMap, read_catalog
from fashion_retrieval.data.synthetic import COLUMNS, GARMENTS, make_catalog
from fashion_retrieval.errors import CatalogError


@pytest.fixture(scope="module")
def catalog_csv(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("cat"), n=40, seed=2, image_size=32)


def test_synthetic_catalog_reads_with_deepfashion_reader(catalog_csv):
    catalog = read_catalog(catalog_csv)
    assert len(catalog) == 40 and catalog.has_text
    assert set(COLUMNS) - {"image_id", "caption", "path"} <= set(catalog.attributes)
    assert all(p.startswith(str(catalog_csv.parent / "selected_images")) for p in catalog.frame["path"])
    assert set(catalog.frame["product_type"]) <= {t for t, _ in GARMENTS.values()}
    assert set(catalog.frame["gender"]) <= {"MEN", "WOMEN"}


def test_synthetic_catalog_is_deterministic(tmp_path):
    a = make_catalog(tmp_path / "a", n=12, seed=5, image_size=32)
    b = make_catalog(tmp_path / "b", n=12, seed=5, image_size=32)
    assert a.read_text() == b.read_text()
    for name in pd.read_csv(a)["path"]:
        assert (a.parent / "selected_images" / name).read_bytes() == (b.parent / "selected_images" / name).read_bytes()
    assert make_catalog(tmp_path / "c", n=12, seed=6, image_size=32).read_text() != a.read_text()


def test_validation_errors(catalog_csv, tmp_path):
    frame = pd.read_csv(catalog_csv)
    frame.iloc[[0, 3]].assign(image_id="dup").pipe(lambda d: pd.concat([frame, d])).to_csv(
        tmp_path / "d.csv", index=False
    )
    with pytest.raises(CatalogError, match=r"duplicate image_id in 2 rows \(row 42: 'dup'"):
        read_catalog(tmp_path / "d.csv")
    frame.drop(columns=["caption"]).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(CatalogError, match="missing column.*caption.*--text-col"):
        read_catalog(tmp_path / "m.csv")
    frame.head(0).to_csv(tmp_path / "e.csv", index=False)
    with pytest.raises(CatalogError, match="no rows"):
        read_catalog(tmp_path / "e.csv")
    frame.assign(caption=["" if i == 4 else c for i, c in enumerate(frame["caption"])]).to_csv(
        tmp_path / "c.csv", index=False
    )
    with pytest.raises(CatalogError, match=r"empty caption in 1 rows \(row 6"):
        read_catalog(tmp_path / "c.csv")
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(CatalogError, match="unknown catalogue type"):
        read_catalog(tmp_path / "x.xlsx")


def test_parquet_with_mapping(catalog_csv, tmp_path):
    frame = pd.read_csv(catalog_csv).rename(columns={"image_id": "sku"})
    frame.to_parquet(tmp_path / "c.parquet")
    catalog = read_catalog(
        tmp_path / "c.parquet", columns=ColumnMap(id="sku"), images_dir=catalog_csv.parent / "selected_images"
    )
    assert catalog.frame["id"].tolist() == frame["sku"].tolist()
