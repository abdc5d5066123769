"""The detection store: parts committed whole, identities kept apart, edited images told by their content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storage.detections import (
    DetectedImage,
    DetectionStore,
    DetectionStoreError,
    folder_store_path,
    matching_entry,
    parse_part,
    part_payload,
    slot_of_image,
)
from storage.hashing import file_state

DETECTOR = {"model": "fasterrcnn_mobilenet_v3_large_fpn", "weights_sha256": "ab" * 32, "score_threshold": 0.7}


def _images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        (folder / f"img{i:03d}.jpg").write_bytes(f"image {i}".encode())
        names.append(f"img{i:03d}.jpg")
    return names


def _entry(folder: Path, name: str, persons: int = 1) -> DetectedImage:
    boxes = tuple(((10.0 * k, 5.0, 40.0, 80.0), 0.9 - 0.1 * k) for k in range(persons))
    return DetectedImage(name, file_state(folder / name), (320, 240), boxes)


def _one_part_per_image(tmp_path: Path, n: int) -> DetectionStore:
    """A store of ``n`` images of ``tmp_path / "photos"``, one part each, image ``i`` with ``i % 3`` persons."""
    folder = tmp_path / "photos"
    names = _images(folder, n)
    store = DetectionStore(tmp_path / "store", folder, DETECTOR)
    with store.writer(part_size=1) as writer:
        writer.add([_entry(folder, name, persons=i % 3) for i, name in enumerate(names)])
    return store


def test_part_round_trip_is_the_documented_detections_format(tmp_path: Path) -> None:
    names = _images(tmp_path / "photos", 2)
    images = [_entry(tmp_path / "photos", names[0], 2), _entry(tmp_path / "photos", names[1], 0)]
    payload = part_payload(images)
    assert payload["detections"][0] == {"file_name": names[0], "category_id": 1, "bbox": [0.0, 5.0, 40.0, 80.0],
                                        "score": 0.9}  # fmt: skip
    assert len(payload["detections"]) == 2  # the image without persons is listed in images only
    assert [i["file_name"] for i in payload["images"]] == names
    assert parse_part(json.loads(json.dumps(payload))) == images
    with pytest.raises(ValueError, match="damaged entry"):
        parse_part({**payload, "images": [{"file_name": "x"}]})


def test_writer_commits_parts_and_the_rest_on_close(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    names = _images(folder, 5)
    store = DetectionStore(tmp_path / "store", folder, DETECTOR)
    with store.writer(part_size=2) as writer:
        writer.add([_entry(folder, n) for n in names])
        assert len(store.parts()) == 2  # two full parts of 2; the fifth image waits for the close
    assert len(store.parts()) == 3
    assert sorted(store.images()) == names
    assert DetectionStore.current(tmp_path / "store", folder).path == store.path


def test_an_interrupted_writer_keeps_what_it_had(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    names = _images(folder, 3)
    store = DetectionStore(tmp_path / "store", folder, DETECTOR)
    with pytest.raises(KeyboardInterrupt), store.writer(part_size=100) as writer:
        writer.add([_entry(folder, n) for n in names[:2]])
        raise KeyboardInterrupt
    assert sorted(store.images()) == names[:2]
    with store.writer(part_size=100):  # the lock was released
        pass


def test_kill_9_loses_only_the_uncommitted_part(tmp_path: Path) -> None:
    """A writer killed while a part is being written leaves only a temporary file, which its slot's next writer
    removes; every committed part is intact."""
    folder = tmp_path / "photos"
    names = _images(folder, 4)
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import storage.atomic as atomic
        from storage.detections import DetectedImage, DetectionStore
        from storage.hashing import file_state
        folder = Path({str(folder)!r})
        store = DetectionStore({str(tmp_path / "store")!r}, folder, {DETECTOR!r})
        entries = [DetectedImage(n, file_state(folder / n), (1, 1), ()) for n in {names!r}]
        calls = []
        real_fsync = os.fsync
        def fsync_then_die(fd):
            if ".part-" in os.readlink(f"/proc/self/fd/{{fd}}"):
                calls.append(fd)
                if len(calls) == 2:  # inside the second part's write, before its rename
                    os.kill(os.getpid(), signal.SIGKILL)
            real_fsync(fd)
        atomic.os.fsync = fsync_then_die
        with store.writer(part_size=2) as writer:
            writer.add(entries)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], check=False)
    assert proc.returncode == -9
    store = DetectionStore(tmp_path / "store", folder, DETECTOR)
    assert sorted(store.images()) == names[:2]
    assert list(store.path.glob(".part-*.tmp"))  # the torn part never became a part
    with store.writer():
        pass
    assert not list(store.path.glob(".part-*.tmp"))


def test_another_identity_is_another_folder_and_becomes_current(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    names = _images(folder, 1)
    first = DetectionStore(tmp_path / "store", folder, DETECTOR)
    with first.writer() as writer:
        writer.add([_entry(folder, names[0])])
    second = DetectionStore(tmp_path / "store", folder, {**DETECTOR, "score_threshold": 0.5})
    assert second.path != first.path and second.images() == {}
    with second.writer():
        pass
    assert DetectionStore.current(tmp_path / "store", folder).detector == second.detector
    first.activate()  # switching back: its boxes are still there
    assert sorted(DetectionStore.current(tmp_path / "store", folder).images()) == names


def test_two_folders_of_one_name_are_kept_apart(tmp_path: Path) -> None:
    a, b = tmp_path / "cam1" / "frames", tmp_path / "cam2" / "frames"
    _images(a, 1), _images(b, 1)
    assert folder_store_path(tmp_path / "store", a) != folder_store_path(tmp_path / "store", b)
    with DetectionStore(tmp_path / "store", a, DETECTOR).writer() as writer:
        writer.add([_entry(a, "img000.jpg")])
    assert DetectionStore.current(tmp_path / "store", b) is None


def test_a_header_of_another_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _images(folder, 1)
    store = DetectionStore(tmp_path / "store", folder, DETECTOR)
    store.activate()
    head = store.path.parent / "folder.json"
    head.write_text(json.dumps({**json.loads(head.read_text()), "folder": "/elsewhere"}))
    with pytest.raises(DetectionStoreError, match="/elsewhere"):
        DetectionStore.current(tmp_path / "store", folder)


def test_a_second_writer_of_a_slot_is_refused(tmp_path: Path) -> None:
    store = DetectionStore(tmp_path / "store", tmp_path, DETECTOR)
    with store.writer(shard_index=0, num_shards=2):
        with pytest.raises(DetectionStoreError, match="slot 0/2"):
            store.writer(shard_index=0, num_shards=2)
        with store.writer(shard_index=1, num_shards=2):
            pass


def test_a_damaged_part_is_left_out_with_a_warning(tmp_path: Path) -> None:
    store = _one_part_per_image(tmp_path, 2)
    store.parts()[0].write_text("{not json")
    with pytest.warns(RuntimeWarning, match="detected again"):
        held = store.images()
    assert len(held) == 1


def test_matching_entry_tells_an_edited_image_by_its_content(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (name,) = _images(folder, 1)
    entry = _entry(folder, name)
    assert matching_entry([entry], folder / name) == entry
    os.utime(folder / name, ns=(1, 1))  # touched, same bytes: still the entry (by fingerprint)
    assert matching_entry([entry], folder / name) == entry
    (folder / name).write_bytes(b"another picture")
    assert matching_entry([entry], folder / name) is None
    assert matching_entry([entry], folder / "gone.jpg") is None


def test_compaction_keeps_every_entry(tmp_path: Path) -> None:
    store = _one_part_per_image(tmp_path, 6)
    before = store.images()
    assert store.compact(min_parts=10) == 0
    assert store.compact(min_parts=6) == 6
    assert len(store.parts()) == 1 and store.images() == before


def test_slots_split_the_images_the_same_way_everywhere() -> None:
    names = [f"img{i}.jpg" for i in range(200)]
    slots = [slot_of_image(n, 3) for n in names]
    assert set(slots) == {0, 1, 2}
    assert slots == [slot_of_image(n, 3) for n in names]


def test_compaction_leaves_a_damaged_part_in_place(tmp_path: Path) -> None:
    store = _one_part_per_image(tmp_path, 3)
    damaged = store.parts()[0]
    damaged.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert store.compact(min_parts=3) == 2
    assert damaged.is_file() and len(store.parts()) == 2
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert len(store.images()) == 2
