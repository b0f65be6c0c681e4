"""Decoder and U-Net: output shapes, groups, errors."""

from __future__ import annotations

import pytest
import torch

from onnx_run.components import TeacherSpec
from onnx_run.errors import UserError
from onnx_run_tasks_segmentation import SegmentationConfig, SegmentationTask, UpConvDecoder
from onnx_run_tasks_segmentation.teachers import UNetConfig, unet


@pytest.mark.parametrize(
    "feature_shape, image_size",
    [((4, 16, 16), (16, 16)),      # same-size sensor maps
     ((4, 8, 8), (32, 32)),        # 4x smaller maps: two extra up-convolutions
     ((3, 10, 13), (21, 27)),      # odd, non-square, not a power of two
     ((5, 40, 40), (32, 32))],     # larger maps (full convolution): resized down
)
def test_decoder_output_at_input_size(feature_shape, image_size):
    task = SegmentationTask(SegmentationConfig(decoder_widths=[4, 8]))
    dec = task.build_backend(feature_shape, 2, output_size=image_size)
    out = dec(torch.rand(3, *feature_shape))
    assert out.shape == (3, 2, *image_size)
    out.sum().backward()
    assert all(p.grad is not None for p in dec.parameters())


@pytest.mark.parametrize("feature_shape, image_size", [((4, 16, 16), (16, 16)), ((3, 10, 13), (21, 27))])
def test_the_head_of_the_readout_inputs_is_the_decoder_output(feature_shape, image_size):
    """What the estimate's per-pixel kernel reads: the 1x1 head of it gives the logits, where
    the maps are the image's size and where they are resized (bilinear resizing commutes with
    the head)."""
    task = SegmentationTask(SegmentationConfig(decoder_widths=[4, 8]))
    dec = task.build_backend(feature_shape, 2, output_size=image_size)
    maps = torch.rand(3, *feature_shape)
    inputs = task.pixel_readout(dec, maps)
    assert inputs.shape == (3, 4, *image_size)
    torch.testing.assert_close(dec.head(inputs), dec(maps), rtol=1e-5, atol=1e-5)
    assert task.pixel_readout(torch.nn.Conv2d(4, 2, 1), maps) is None  # not the task's decoder: no readout


def test_decoder_extra_stages_only_when_maps_are_small():
    assert len(UpConvDecoder((4, 8, 8), 2, output_size=(32, 32), widths=[4]).extra) == 2
    assert len(UpConvDecoder((4, 32, 32), 2, output_size=(32, 32), widths=[4]).extra) == 0


def test_backend_uses_dataset_image_size():
    task = SegmentationTask(SegmentationConfig(decoder_widths=[4], num_images=10))
    assert task.build_backend((2, 12, 12), 2)(torch.rand(1, 2, 12, 12)).shape[-2:] == (32, 32)  # image_size_px
    task.datasets(image_size=(20, 20), channels=1, seed=0)  # the optics' input size wins
    assert task.build_backend((2, 12, 12), 2)(torch.rand(1, 2, 12, 12)).shape[-2:] == (20, 20)


def test_kernel_groups_feed_one_level_each():
    dec = UpConvDecoder((7, 16, 16), 2, output_size=(16, 16), widths=[4, 8, 16], kernel_groups=[1, 2, 4])
    assert [blk[0].in_channels for blk in dec.levels] == [1, 2, 4]
    assert dec(torch.rand(2, 7, 16, 16)).shape == (2, 2, 16, 16)
    with pytest.raises(ValueError, match="sum to the number of optical maps"):
        UpConvDecoder((8, 16, 16), 2, output_size=(16, 16), widths=[4, 8, 16], kernel_groups=[1, 2, 4])


def test_paper_preset_decoder():
    task = SegmentationTask(SegmentationConfig(preset="paper"))
    assert task.optics_defaults()["num_kernels"] == 56
    dec = task.build_backend((56, 32, 32), 2)
    n = sum(p.numel() for p in dec.parameters())
    assert 0.7e6 < n < 1.4e6  # paper: 1.06 M
    with pytest.raises(UserError, match="kernel_groups"):
        task.build_backend((8, 32, 32), 2)


def test_instance_norm_makes_decoder_scale_invariant():
    torch.manual_seed(0)
    dec = UpConvDecoder((3, 8, 8), 2, output_size=(8, 8), widths=[4], input_norm="instance")
    f = torch.rand(2, 3, 8, 8)
    assert torch.allclose(dec(f), dec(1000.0 * f), atol=1e-4)
    raw = UpConvDecoder((3, 8, 8), 2, output_size=(8, 8), widths=[4], input_norm="none")
    assert not torch.allclose(raw(f), raw(1000.0 * f), atol=1e-2)


@pytest.mark.parametrize("channels, size", [(3, (32, 32)), (1, (27, 33))])
def test_unet_shapes(channels, size):
    net = unet(UNetConfig(widths=[4, 8, 16]), TeacherSpec("segmentation", channels, size, 2))
    out = net(torch.rand(2, channels, *size))
    assert out.shape == (2, 2, *size)


def test_unet_refuses_classification():
    with pytest.raises(UserError, match="'unet' is a segmentation teacher"):
        unet(UNetConfig(), TeacherSpec("classification", 1, (28, 28), 10))


def test_group_norm_decoder_keeps_samples_independent_and_its_ntk_exact():
    """GroupNorm normalises each sample alone: a sample's logits do not depend on the rest of
    the batch (BatchNorm's would), so the student's NTK stays a per-sample kernel; the
    structured kernel (GroupNorm's scale and shift as structured blocks) equals the Jacobian
    one."""
    from onnx_run.ntk import empirical_ntk

    torch.manual_seed(0)
    dec = UpConvDecoder((3, 8, 8), 2, output_size=(8, 8), widths=[8, 16], norm="group")
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in dec.modules()) == 6
    f = torch.rand(4, 3, 8, 8)
    assert torch.allclose(dec(f)[:1], dec(f[:1]), atol=1e-5)
    reduce = lambda out: out.reshape(out.shape[0], -1)[:, :5]  # noqa: E731
    exact = empirical_ntk(dec, f, reduce=reduce, method="exact")
    assert torch.allclose(empirical_ntk(dec, f, reduce=reduce, method="structured"), exact, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="norm must be 'none' or 'group'"):
        UpConvDecoder((3, 8, 8), 2, output_size=(8, 8), norm="batch")
