"""Discovery: per-source counts of what the teacher must infer, new folders, the digest that keys students."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.sources import LoadedSource
from pipeline.records import SampleRecord
from pipeline.teacher.discovery import summarise
from pipeline.teacher.plan import InferencePlan


def _record(source: str, image: str, instance: str = "0") -> SampleRecord:
    root = Path("/data") / source.split("/")[1] if source.startswith("folder/") else Path("/data")
    return SampleRecord(source, root, image, (10.0, 10.0), (1.0, 1.0), f"{image}#{instance}",
                        joints=np.zeros((16, 2), np.float32) if source.startswith("mpii") else None)  # fmt: skip


def _loaded(records: list[SampleRecord]) -> list[LoadedSource]:
    by_source: dict[str, list[SampleRecord]] = {}
    for r in records:
        by_source.setdefault(r.source, []).append(r)
    return [LoadedSource(name, found, []) for name, found in by_source.items()]


def test_summarise_counts_images_samples_and_new_folders() -> None:
    records = [_record("mpii/train", "a.jpg", "0"), _record("mpii/train", "a.jpg", "1"), _record("mpii/train", "b.jpg")]
    records += [_record("folder/old", "x.jpg"), _record("folder/new", "y.jpg"), _record("folder/new", "z.jpg")]
    # One missing record is unreadable: it still counts as new (inference reports it as failed).
    plan = InferencePlan(records=(records[1], records[4]), unreadable=(records[5],))
    discovery = summarise(_loaded(records), plan, "out/plan.json")
    by_source = {s.source: s for s in discovery.sources}
    assert [s.source for s in discovery.sources] == ["mpii/train", "folder/old", "folder/new"]
    assert (by_source["mpii/train"].images, by_source["mpii/train"].samples) == (2, 3)
    assert (by_source["mpii/train"].new_images, by_source["mpii/train"].new_samples) == (1, 1)
    assert by_source["folder/new"].new_folder and not by_source["folder/old"].new_folder
    assert not by_source["mpii/train"].new_folder  # a labelled split is never a "folder"
    assert discovery.new_samples == 3 and discovery.plan_path == "out/plan.json"
    # Folders are handed to training by path: two folders may share a name, never a path.
    assert discovery.unlabeled_sources == (str(Path("/data/old").resolve()), str(Path("/data/new").resolve()))
    lines = discovery.log_lines()
    assert "folder/new (new folder): 2 images, 2 samples, 2 new images (2 samples) to infer" in lines
    assert lines[-1] == "total to infer: 3 samples"


def test_an_empty_source_is_listed_but_not_trained_on() -> None:
    loaded = [LoadedSource("mpii/train", [_record("mpii/train", "a.jpg")], []), LoadedSource("folder/empty", [], [])]
    discovery = summarise(loaded, InferencePlan(records=()))
    assert [s.source for s in discovery.sources] == ["mpii/train", "folder/empty"]
    assert discovery.unlabeled_sources == () and discovery.new_samples == 0


def test_digest_changes_only_with_the_named_sources() -> None:
    before = summarise(_loaded([_record("mpii/train", "a.jpg"), _record("folder/f", "x.jpg")]), InferencePlan(()))
    after = summarise(
        _loaded([_record("mpii/train", "a.jpg"), _record("folder/f", "x.jpg"), _record("folder/g", "y.jpg")]),
        InferencePlan(()),
    )
    assert before.digest(("mpii/train",)) == after.digest(("mpii/train",))
    assert before.digest(("mpii/train", "folder/f")) == after.digest(("mpii/train", "folder/f"))
    assert after.digest(after.unlabeled_sources) != before.digest(before.unlabeled_sources)
