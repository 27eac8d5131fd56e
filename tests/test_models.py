import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from core.models import Segmentor
from core.models.weights import WeightsError, classifier_state_dict


def _classify(model, img):
    im = np.asarray(Image.fromarray(img).resize((224, 224), Image.BICUBIC)).astype(np.float32) / 255
    x = torch.from_numpy((im - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        return int(model(x).argmax())


def test_packaged_lite0_weights_classify_sample_photos():
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(classifier_state_dict("efficientnet_lite0"))
    assert _classify(model, data.chelsea()) == 285   # Egyptian cat
    assert _classify(model, data.coffee()) == 967    # espresso


def test_random_init_does_not_classify():  # the test above can fail: without weights it does
    import timm

    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    assert (_classify(model, data.chelsea()), _classify(model, data.coffee())) != (285, 967)


def test_segmentor_loads_backbone_weights():
    seg = Segmentor(19)
    ref = classifier_state_dict("efficientnet_lite0")
    assert torch.equal(seg.backbone.state_dict()["conv_stem.weight"], ref["conv_stem.weight"])


@pytest.mark.parametrize("os_,size", [(8, (64, 128)), (16, (64, 96))])
def test_deeplabv2_output_shapes(os_, size):
    seg = Segmentor(19, output_stride=os_, head="deeplabv2", weights=None)
    out = seg(torch.zeros(2, 3, *size, dtype=torch.uint8))
    assert out.logits.shape == (2, 19, size[0] // os_, size[1] // os_)
    assert out.feat.shape[:2] == (2, 320) and out.feat.shape[2:] == out.logits.shape[2:]
    assert seg.feat_channels == 320


@pytest.mark.parametrize("os_,size", [(8, (64, 128)), (16, (64, 96)), (16, (128, 256))])
def test_deeplabv3plus_output_shapes_are_stride_4(os_, size):
    seg = Segmentor(19, output_stride=os_, weights=None)          # the default head
    assert seg.head_name == "deeplabv3plus"
    out = seg(torch.zeros(2, 3, *size, dtype=torch.uint8))
    assert out.logits.shape == (2, 19, size[0] // 4, size[1] // 4)
    assert out.feat.shape == (2, 128, size[0] // 4, size[1] // 4) and seg.feat_channels == 128
    # the backbone's last feature really is at the output stride
    feats = seg.backbone(torch.zeros(1, 3, *size))
    assert [f.shape[-2] for f in feats] == [size[0] // 4, size[0] // os_]


def test_backbone_bn_stays_frozen_through_train_and_eval():
    seg = Segmentor(5, weights=None)
    bns = [m for m in seg.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    head_bns = [m for m in seg.head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and head_bns
    seg.eval()
    seg.train()
    assert not any(m.training for m in bns) and all(m.training for m in head_bns)
    assert not any(p.requires_grad for m in bns for p in m.parameters())
    mean = bns[0].running_mean.clone()
    seg(torch.rand(2, 3, 64, 64))
    assert torch.equal(bns[0].running_mean, mean)          # no statistics update in train mode
    with pytest.raises(ValueError, match="unknown head"):
        Segmentor(5, head="unet", weights=None)


def test_param_groups_head_lr_is_ten_times():
    seg = Segmentor(5, weights=None)
    g = seg.param_groups(0.01)
    assert g[0]["lr"] == 0.01 and g[1]["lr"] == pytest.approx(0.1)
    n = sum(p.numel() for gr in g for p in gr["params"])
    assert n == sum(p.numel() for p in seg.parameters())


def test_missing_and_mismatched_weight_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        Segmentor(19, weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"conv_stem.weight": torch.zeros(3)}, bad)
    with pytest.raises(WeightsError, match="does not fit"):
        Segmentor(19, weights=str(bad))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        Segmentor(19, weights=str(junk))
    with pytest.raises(WeightsError, match="no packaged weights"):
        Segmentor(19, backbone="resnet18")


def test_weights_load_through_timm_and_normalisation_comes_from_the_pretrained_cfg(tmp_path, monkeypatch):
    """A --weights file wrapped and prefixed as training scripts save it is normalised once into the
    cache and loaded by timm (pretrained_cfg_overlay=dict(file=...)); mean/std are the backbone's own."""
    monkeypatch.setenv("SEGSTUDIO_CACHE", str(tmp_path / "cache"))
    ref = classifier_state_dict("efficientnet_lite0")
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in ref.items()}}, wrapped)
    seg = Segmentor(19, weights=str(wrapped))
    assert torch.equal(seg.backbone.state_dict()["blocks.6.0.conv_pw.weight"], ref["blocks.6.0.conv_pw.weight"])
    assert len(list((tmp_path / "cache" / "weights").glob("efficientnet_lite0-*.pth"))) == 1
    assert seg.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    tf = Segmentor(5, backbone="tf_efficientnet_lite0", weights=None)   # a port trained with other statistics
    assert tf.mean.flatten().tolist() == [0.5, 0.5, 0.5] and tf.std.flatten().tolist() == [0.5, 0.5, 0.5]


def test_the_first_build_which_converts_the_weights_draws_the_same_head_as_later_builds(tmp_path):
    # the conversion builds a timm model (random init): it must not move the caller's seeded RNG, or the
    # first run of a fresh cache trains another model than every later run (seen: other queries)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        states.append(Segmentor(19, cache_dir=str(tmp_path)).head.state_dict())
    assert list((tmp_path / "weights").glob("*.pth"))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
