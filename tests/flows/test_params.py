"""distill-flow parameters: validation, the flow signature, and the deployments of prefect.yaml."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from flows.params import DistillParams

REPO = Path(__file__).resolve().parents[2]

MINIMAL = {
    "teacher": {"preset": "tiny_teacher_mpii", "checkpoint": "t.pth"},
    "labelled": [{"dataset": "mpii", "root": "data/mpii"}],
    "cache_dir": "cache",
    "output_dir": "out",
}


def test_minimal_parameters_take_documented_defaults() -> None:
    params = DistillParams.model_validate(MINIMAL)
    assert params.alpha == 0.5 and params.use_ground_truth and params.num_shards == 1
    assert (params.labelled[0].train, params.labelled[0].val) == ("train", "valid")
    # FPD's recipe: the FPD students fine-tune a ground-truth student (the run's gt_only without gt_checkpoint).
    student = params.student
    assert (student.fpd_init, student.gt_checkpoint, student.backbone) == ("gt_student", None, None)
    coco = DistillParams.model_validate(MINIMAL | {"labelled": [{"dataset": "coco", "root": "c"}]})
    assert (coco.labelled[0].train, coco.labelled[0].val) == ("train2017", "val2017")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"alpha": 1.5}, "less than or equal to 1"),
        ({"num_shards": 0}, "greater than or equal to 1"),
        ({"eval_datasets": ["coco"]}, "needs a labelled source"),
        ({"labelled": [{"dataset": "mpii", "root": "a"}, {"dataset": "coco", "root": "b"}]}, "different joint sets"),
        ({"labelled": []}, "at least 1"),
        ({"baselines": ["teacher_only"]}, "gt_only"),
        ({"student": {"fpd_init": "scratch", "gt_checkpoint": "gt.pth"}}, "gt_checkpoint is where"),
        ({"student": {"fpd_init": "pretrained"}}, "gt_student"),
        ({"student": {"init_checkpoint": "gt.pth"}}, "Extra inputs"),
        ({"schedule": {"epochs": 3, "lr": 1e-3, "bogus": 1}}, "Extra inputs"),
    ],
)
def test_invalid_parameters_are_refused_with_a_reason(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DistillParams.model_validate(MINIMAL | change)


def test_flow_signature_mirrors_the_parameter_model() -> None:
    from flows.distill import distill_flow

    signature = inspect.signature(distill_flow.fn).parameters
    assert set(signature) == set(DistillParams.model_fields)
    for name, parameter in signature.items():
        field = DistillParams.model_fields[name]
        if parameter.default is inspect.Parameter.empty:
            assert field.is_required(), name
        elif parameter.default is not None:  # None means "the model's default"
            assert parameter.default == field.get_default(call_default_factory=True), name


def test_prefect_yaml_deployments_are_valid_runs_on_the_gpu_pool() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {(d["entrypoint"].rsplit(":", 1)[1], d["name"]): d for d in spec["deployments"]}
    assert set(deployments) == {
        ("distill_flow", "default"),
        ("distill_flow", "demo"),
        ("teacher_inference_flow", "shard"),
    }
    assert {d["work_pool"]["name"] for d in deployments.values()} == {"gpu"}
    for key in (("distill_flow", "default"), ("distill_flow", "demo")):
        params = DistillParams.model_validate(deployments[key]["parameters"])
        assert params.eval_datasets == [params.labelled[0].dataset]
    demo = DistillParams.model_validate(deployments["distill_flow", "demo"]["parameters"])
    assert demo.device.device == "cpu" and demo.num_shards == 2
    assert set(demo.baselines) == {"gt_only", "fpd_labelled"}
    assert all(p.startswith("demo_out/") for p in (demo.cache_dir, demo.output_dir, demo.teacher.checkpoint))


def test_demo_coco_parameters_swap_every_dataset_specific_field() -> None:
    from demo.demo import dataset_parameters

    mpii, coco = DistillParams.model_validate(dataset_parameters("mpii")), dataset_parameters("coco")
    coco = DistillParams.model_validate(coco)
    assert (coco.teacher.preset, coco.student.preset) == ("tiny_teacher_coco", "tiny_student_coco")
    assert coco.labelled[0].dataset == "coco" and coco.eval_datasets == ["coco"]
    assert coco.cache_dir != mpii.cache_dir and coco.output_dir != mpii.output_dir
    assert coco.unlabeled_roots == mpii.unlabeled_roots and coco.alpha == mpii.alpha
    # COCO's students take smaller batches and a higher lr (demo.demo.COCO_SCHEDULE), still without augmentation
    assert coco.schedule.batch_size < mpii.schedule.batch_size and not coco.schedule.augment


def test_the_students_base_recipe_carries_the_run_settings() -> None:
    params = DistillParams.model_validate(MINIMAL | {"schedule": {"epochs": 3, "lr": 5e-4, "milestones": [2]},
                                                     "device": {"device": "cpu", "num_workers": 1}})  # fmt: skip
    base = params.base_train_config()
    assert base.loss.alpha == 0.0 and base.data.teacher_cache is None and base.eval.dataset is None
    assert base.student_init is None and base.student_backbone is None  # each variant sets its own start
    assert [(s.kind, str(s.root), s.split) for s in base.data.labelled] == [("mpii", "data/mpii", "train")]
    assert (base.optim.epochs, base.optim.lr, base.optim.milestones) == (3, 5e-4, (2,))
    assert (base.device, base.amp, base.data.workers, base.resume) == ("cpu", "none", 1, True)


def test_detector_params_unpack_to_the_stages_settings_and_store() -> None:
    from flows.params import DetectorParams, DistillParams
    from pipeline.detection.settings import DetectorSettings

    assert DetectorParams().settings(amp=True) == DetectorSettings()
    base = {"teacher": {"checkpoint": "t.pth"}, "labelled": [{"dataset": "mpii", "root": "data/mpii"}],
            "cache_dir": "caches/hg8", "output_dir": "runs/x"}  # fmt: skip
    assert DistillParams.model_validate(base).detection_store == "caches/hg8/detections"
    whole = DistillParams.model_validate({**base, "detector": {"person_boxes": "whole_image"}})
    assert whole.detection_store is None
    with pytest.raises(ValueError, match="score_threshold"):
        DistillParams.model_validate({**base, "detector": {"score_threshold": 1.5}})
