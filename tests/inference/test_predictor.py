"""Predictor: fold ensemble, mirror TTA, whole volume vs sliding window; loading checkpoints."""

import numpy as np
import pytest
import torch

from pfseg_pipeline.checkpoints import find_folds
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.inference.predictor import Predictor, load_models, mirror_combinations
from pfseg_pipeline.inference.sliding_window import sliding_window_inference
from pfseg_pipeline.inference.whole_volume import whole_volume_inference
from pfseg_pipeline.networks.registry import build_network

from .conftest import save_fold, tiny_plans, write_model_dir


def _image(shape=(2, 13, 21, 10), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_fold_ensemble_is_the_mean_of_the_folds_probabilities():
    plans = tiny_plans()
    models = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        models.append(build_network("pfseg", plans).eval())
    image = _image()
    each = [Predictor([m], plans, "pfseg").predict_preprocessed(image) for m in models]
    ensemble = Predictor(models, plans, "pfseg").predict_preprocessed(image)
    assert ensemble.shape == (3, 13, 21, 10) and ensemble.dtype == np.float32
    np.testing.assert_allclose(ensemble, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(each[0], each[1])  # the folds really differ


def test_whole_volume_for_patch_free_and_sliding_window_for_patch_based():
    plans = tiny_plans()
    image = _image()
    volume = torch.from_numpy(image)[None]
    pf = build_network("pfseg", plans).eval()
    expected = whole_volume_inference(volume, pf.forward_infer, plans.hr_divisor_zyx, plans.hr_shape_zyx)
    predictor = Predictor([pf], plans, "pfseg")
    assert predictor.patch_free
    np.testing.assert_allclose(predictor.predict_preprocessed(image), expected[0].numpy(), atol=1e-6)

    pb = build_network("resunet3d", plans).eval()
    expected = sliding_window_inference(volume, pb.forward_infer, plans.patch_based.patch_shape_zyx,
                                        step=plans.patch_based.step)
    predictor = Predictor([pb], plans, "resunet3d")
    assert not predictor.patch_free
    np.testing.assert_allclose(predictor.predict_preprocessed(image), expected[0].numpy(), atol=1e-6)


def test_mirror_tta_averages_the_eight_flips():
    assert len(mirror_combinations((0, 1, 2))) == 8 and mirror_combinations((0, 1, 2))[0] == ()
    plans = tiny_plans()
    model = build_network("hdc", plans).eval()
    image = _image(seed=3)
    volume = torch.from_numpy(image)[None]
    manual = torch.zeros(1, 3, *image.shape[1:])
    for flip in mirror_combinations((0, 1, 2)):
        dims = [d + 2 for d in flip]
        probs = whole_volume_inference(torch.flip(volume, dims), model.forward_infer,
                                       plans.hr_divisor_zyx, plans.hr_shape_zyx)
        manual += torch.flip(probs, dims)
    manual /= 8
    tta = Predictor([model], plans, "hdc", tta=True)
    assert tta.n_forward_passes == 8
    np.testing.assert_allclose(tta.predict_preprocessed(image), manual[0].numpy(), atol=1e-6)


def test_wrong_channel_count_is_refused():
    plans = tiny_plans()
    predictor = Predictor([build_network("pfseg", plans)], plans, "pfseg")
    with pytest.raises(ValueError, match="channels"):
        predictor.predict_preprocessed(_image((3, 8, 8, 8)))


def test_load_models_builds_every_fold_and_matches_the_saved_weights(tmp_path):
    plans = tiny_plans()
    saved = write_model_dir(tmp_path / "pfseg", plans, "pfseg", folds=(0, 1, "all"))
    (tmp_path / "pfseg" / "fold_3").mkdir()  # a fold without the checkpoint is not picked
    assert find_folds(tmp_path / "pfseg") == ["0", "1", "all"]
    loaded = load_models(tmp_path / "pfseg")
    assert loaded.network == "pfseg" and loaded.folds == ["0", "1", "all"]
    image = _image()
    for ours, theirs in zip(loaded.models, saved):
        a = Predictor([ours], loaded.plans, "pfseg").predict_preprocessed(image)
        b = Predictor([theirs], plans, "pfseg").predict_preprocessed(image)
        np.testing.assert_array_equal(a, b)
    assert load_models(tmp_path / "pfseg", folds=[1]).folds == ["1"]


def test_load_models_errors_name_the_file(tmp_path):
    plans = tiny_plans()
    model_dir = tmp_path / "resunet3d"
    write_model_dir(model_dir, plans, "resunet3d", folds=(0, 1))
    with pytest.raises(UserError, match="checkpoint_best.pt"):
        load_models(model_dir, checkpoint="best")
    with pytest.raises(UserError, match="fold_7"):
        load_models(model_dir, folds=[7])
    with pytest.raises(UserError, match="expected 'pfseg'"):
        load_models(model_dir, network="pfseg")
    # corrupt: truncated file
    path = model_dir / "fold_1" / "checkpoint_final.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match=r"fold_1/checkpoint_final\.pt: corrupt"):
        load_models(model_dir)
    # weights of another plan (wider network): shape mismatch
    other = tiny_plans(widths=(8, 8, 16))
    save_fold(model_dir, 1, build_network("resunet3d", other), "resunet3d", other)
    with pytest.raises(UserError, match=r"fold_1/checkpoint_final\.pt: weights do not fit.*shape mismatch"):
        load_models(model_dir)
    with pytest.raises(UserError, match="nowhere: model folder not found"):
        load_models(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty/plans\.json: file not found"):
        load_models(tmp_path / "empty")
