import numpy as np
import torch

from core.evaluate import confusion_matrix, iou_per_class, mean_iou, predict_logits


def test_confusion_and_miou_hand_computed():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 3]], np.uint8)
    conf = confusion_matrix(pred, label, 4)
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 1; expected[0, 1] = 1        # noqa: E702
    expected[1, 1] = 2; expected[1, 3] = 1        # noqa: E702
    expected[2, 2] = 1; expected[2, 0] = 1        # noqa: E702
    assert (conf == expected).all()
    iou = iou_per_class(conf)
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 2, gt 3, pred 3 -> 2/4; class 2: 1/(2+1-1) = 1/2
    assert np.allclose(iou[:3], [1 / 3, 1 / 2, 1 / 2])
    assert np.isnan(iou[3])  # absent from ground truth: not counted
    assert abs(mean_iou(conf) - 100 * (1 / 3 + 1 / 2 + 1 / 2) / 3) < 1e-9


class _Const(torch.nn.Module):
    """A 'model' whose logits are the input's first channel for class 1, minus it for class 0."""

    def forward(self, x):
        from core.models.segmentor import SegOut

        v = x[:, :1].float()
        return SegOut(torch.cat([-v, v], 1), v)


def test_sliding_window_equals_whole_image_for_a_local_model():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    whole = predict_logits(_Const(), img, (24, 40))
    slid = predict_logits(_Const(), img, (24, 40), window=(16, 16), stride=(8, 8))
    assert whole.shape == slid.shape == (2, 24, 40)
    assert torch.allclose(whole, slid, atol=1e-4)
