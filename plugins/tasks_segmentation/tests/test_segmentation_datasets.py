"""Datasets: the embedded shapes generator, Carvana and folder layouts, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from onnx_run.errors import UserError
from onnx_run.tasks.datasets import DatasetSplits
from onnx_run_tasks_segmentation.datasets import load_segmentation_dataset, split_indices
from onnx_run_tasks_segmentation.metrics import all_background_miou, threshold_baseline
from onnx_run_tasks_segmentation.shapes import generate_shapes, render_shapes_sample

# ----------------------------------------------------------------------------- shapes


def test_shapes_deterministic_and_seeded():
    a, ma = generate_shapes(6, 3, (24, 24))
    b, mb = generate_shapes(6, 3, (24, 24))
    c, mc = generate_shapes(6, 4, (24, 24))
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)
    # image i depends only on (seed, i): a longer dataset extends a shorter one
    d, md = generate_shapes(8, 3, (24, 24))
    assert np.array_equal(d[:6], a) and np.array_equal(md[:6], ma)


def test_shapes_generator_is_pinned():
    """The same (seed, size) must keep giving the same data: cached teachers are keyed by the
    dataset's name, and published numbers by the seed. Change these values only on purpose."""
    x, y = generate_shapes(4, 0, (16, 16))
    assert int(y.sum()) == 157
    assert float(x.astype(np.float64).sum()) == pytest.approx(1071.527239643503, rel=1e-6)


def test_shapes_ranges_and_types():
    x, y = generate_shapes(10, 0, (20, 28))
    assert x.shape == (10, 3, 20, 28) and x.dtype == np.float32
    assert y.shape == (10, 20, 28) and y.dtype == np.int64
    assert x.min() >= 0 and x.max() <= 1
    assert set(np.unique(y)) <= {0, 1}
    assert 0.02 < y.mean() < 0.6  # objects present, not everywhere


def test_shapes_masks_are_exact():
    """The mask selects exactly the pixels composited from the object layer."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        s = render_shapes_sample(rng, (32, 32))
        recomposed = np.clip(np.where(s["mask"][..., None], s["foreground"], s["background"]) * s["gain"]
                             + s["noise"], 0, 1)
        assert np.array_equal(recomposed, s["image"])
        assert s["mask"].any()
        # where the two layers would look different, the mask says which one is seen
        fg_img = np.clip(s["foreground"] * s["gain"] + s["noise"], 0, 1)
        bg_img = np.clip(s["background"] * s["gain"] + s["noise"], 0, 1)
        differs = (fg_img != bg_img).any(-1)
        fg_seen = (s["image"] == fg_img).all(-1)
        assert differs.mean() > 0.5
        assert np.array_equal(fg_seen[differs], s["mask"][differs])


def test_shapes_not_solved_by_a_threshold():
    x, y = generate_shapes(120, 0, (32, 32))
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    best = threshold_baseline(x, y)
    assert best["miou"] < 0.56  # an oracle global threshold barely beats "all background"
    assert best["miou"] >= all_background_miou(y) - 1e-9


def test_shapes_splits_through_loader():
    s = load_segmentation_dataset("shapes", image_size=(16, 16), channels=1, seed=0, num_images=40)
    assert isinstance(s, DatasetSplits)
    assert (len(s.train), len(s.val), len(s.test)) == (28, 4, 8)
    x, y = s.train.tensors
    assert x.shape == (28, 1, 16, 16) and y.shape == (28, 16, 16) and y.dtype == torch.int64
    assert s.classes == ("background", "foreground") and s.channels == 1 and s.image_size == (16, 16)


def test_split_indices_keep_groups_together():
    groups = [f"car{i // 4}" for i in range(40)]
    train, val, test = split_indices(40, groups, 0.1, 0.2, seed=1)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(40))
    parts = [{groups[i] for i in p} for p in (train, val, test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(test) == 8 and len(val) == 4


# ----------------------------------------------------------------------------- files


def _image(rng, h=40, w=60):
    return Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8))


def _mask_array(h=40, w=60, left=10):
    m = np.zeros((h, w), dtype=np.uint8)
    m[:, left:left + w // 2] = 1
    return m


def _gif_mask(m: np.ndarray) -> Image.Image:
    """A palette GIF like Carvana's: index 0 black, index 1 white."""
    pal = [0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254
    img = Image.fromarray(m.astype(np.uint8), mode="P")
    img.putpalette(pal)
    return img


def write_carvana(root, *, cars=4, views=2, kaggle=True):
    rng = np.random.default_rng(0)
    img_dir = root / ("train" if kaggle else "images")
    mask_dir = root / ("train_masks" if kaggle else "masks")
    img_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for c in range(cars):
        for v in range(views):
            stem = f"{c:012x}_{v + 1:02d}"
            _image(rng).save(img_dir / f"{stem}.jpg", quality=95)
            _gif_mask(_mask_array(left=6 * c + v)).save(mask_dir / f"{stem}_mask.gif")
    return root


@pytest.mark.parametrize("kaggle", [True, False])
def test_carvana_layouts_read_back(tmp_path, kaggle):
    root = write_carvana(tmp_path / "carvana", kaggle=kaggle)
    s = load_segmentation_dataset("carvana", image_size=(20, 30), channels=3, seed=0, data_dir=str(root),
                                  val_fraction=0.2, test_fraction=0.25)
    n = len(s.train) + len(s.val) + len(s.test)
    assert n == 8 and min(len(s.train), len(s.val), len(s.test)) >= 1
    x, y = s.train.tensors
    assert x.shape[1:] == (3, 20, 30) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape[1:] == (20, 30) and set(y.unique().tolist()) == {0, 1}
    # masks resized by nearest: a half-width band stays a half-width band (15 of 30 columns)
    assert torch.all(y.sum(2) == 15)


def test_write_carvana_folder_reads_back_as_written(tmp_path):
    """The writer the Carvana-layout benchmarks use (JPEG images, palette-GIF masks) gives back
    every mask exactly and every image within JPEG's error, through the Carvana reader."""
    from onnx_run_tasks_segmentation.carvana import write_carvana_folder

    samples = {f"{c:012x}_{v + 1:02d}": render_shapes_sample(np.random.default_rng([c, v]), (24, 36))
               for c in range(4) for v in range(2)}
    pairs = [(stem, np.round(s["image"] * 255).astype(np.uint8), s["mask"]) for stem, s in samples.items()]
    root = write_carvana_folder(tmp_path / "c", pairs, quality=95)
    assert sorted(p.name for p in (root / "train_masks").iterdir())[0] == "000000000000_01_mask.gif"
    s = load_segmentation_dataset("carvana", image_size=(24, 36), channels=3, seed=0, data_dir=str(root),
                                  val_fraction=0.25, test_fraction=0.25)
    x = torch.cat([s.train.tensors[0], s.val.tensors[0], s.test.tensors[0]])
    y = torch.cat([s.train.tensors[1], s.val.tensors[1], s.test.tensors[1]])
    truth = {tuple(np.asarray(sample["mask"], dtype=np.int64).ravel()): sample["image"] for sample in samples.values()}
    for xi, yi in zip(x, y):
        image = truth[tuple(yi.numpy().ravel())]  # every mask read back is one that was written, exactly
        assert np.abs(xi.numpy().transpose(1, 2, 0) - image).mean() < 0.03  # JPEG's error only
    assert len(truth) == len(y) == 8


def test_carvana_views_of_one_car_stay_in_one_split(tmp_path):
    root = write_carvana(tmp_path / "c", cars=6, views=3)
    # full width kept, so the mask's left edge (6 * car + view) identifies the car
    s = load_segmentation_dataset("carvana", image_size=(8, 60), channels=1, seed=2, data_dir=str(root))

    def cars(ds):
        left = ds.tensors[1][:, 0].float().argmax(1)
        return [int(v) // 6 for v in left]

    found = [cars(s.train), cars(s.val), cars(s.test)]
    assert sorted(c for part in found for c in part) == sorted(list(range(6)) * 3)
    sets = [set(p) for p in found]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_carvana_max_images(tmp_path):
    root = write_carvana(tmp_path / "c", cars=5, views=2)
    s = load_segmentation_dataset("carvana", image_size=(8, 8), channels=1, seed=0, data_dir=str(root), max_images=6)
    assert len(s.train) + len(s.val) + len(s.test) == 6


def test_folder_layout_read_back(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(5):
        _image(rng, 30, 30).save(tmp_path / "images" / f"s{i}.png")
        m = np.zeros((30, 30), dtype=np.uint8)
        m[:15] = 200 + i  # any nonzero value is foreground
        Image.fromarray(m).save(tmp_path / "masks" / f"s{i}.png")
    s = load_segmentation_dataset("folder", image_size=(10, 10), channels=1, seed=0, data_dir=str(tmp_path),
                                  val_fraction=0.2, test_fraction=0.2)
    y = torch.cat([s.train.tensors[1], s.val.tensors[1], s.test.tensors[1]])
    assert y.shape == (5, 10, 10)
    assert torch.all(y[:, :5] == 1) and torch.all(y[:, 5:] == 0)


def test_missing_folder_names_layout(tmp_path):
    with pytest.raises(UserError, match=r"folder .*masks not found.*expected data_dir/images"):
        (tmp_path / "images").mkdir()
        load_segmentation_dataset("folder", image_size=(8, 8), channels=1, seed=0, data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"carvana.*folder .*x not found.*train_masks/<id>_mask.gif"):
        load_segmentation_dataset("carvana", image_size=(8, 8), channels=1, seed=0, data_dir=str(tmp_path / "x"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither train/ \\+ train_masks/ nor images/ \\+ masks/"):
        load_segmentation_dataset("carvana", image_size=(8, 8), channels=1, seed=0, data_dir=str(tmp_path / "empty"))


def test_image_without_mask_and_mask_without_image(tmp_path):
    root = write_carvana(tmp_path / "c", cars=3, views=1)
    (root / "train_masks" / "000000000001_01_mask.gif").unlink()
    with pytest.raises(UserError, match=r"image .*000000000001_01.jpg has no mask"):
        load_segmentation_dataset("carvana", image_size=(8, 8), channels=1, seed=0, data_dir=str(root))
    root2 = write_carvana(tmp_path / "d", cars=3, views=1)
    (root2 / "train" / "000000000002_01.jpg").unlink()
    with pytest.raises(UserError, match=r"mask .*000000000002_01_mask.gif matches no image"):
        load_segmentation_dataset("carvana", image_size=(8, 8), channels=1, seed=0, data_dir=str(root2))


def test_unreadable_image_and_mask(tmp_path):
    root = write_carvana(tmp_path / "c", cars=3, views=1)
    (root / "train" / "000000000000_01.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"000000000000_01.jpg is not a readable image"):
        load_segmentation_dataset("carvana", image_size=(8, 8), channels=1, seed=0, data_dir=str(root))
    root2 = write_carvana(tmp_path / "d", cars=3, views=1)
    (root2 / "train_masks" / "000000000001_01_mask.gif").write_bytes(b"GIF89a broken")
    with pytest.raises(UserError, match=r"mask .*000000000001_01_mask.gif is not a readable image"):
        load_segmentation_dataset("carvana", image_size=(8, 8), channels=1, seed=0, data_dir=str(root2))


def test_mask_size_mismatch(tmp_path):
    root = write_carvana(tmp_path / "c", cars=3, views=1)
    _gif_mask(np.ones((10, 10), np.uint8)).save(root / "train_masks" / "000000000000_01_mask.gif")
    with pytest.raises(UserError, match="a mask must have its image's size"):
        load_segmentation_dataset("carvana", image_size=(8, 8), channels=1, seed=0, data_dir=str(root))


def test_errors_are_one_line(tmp_path):
    with pytest.raises(UserError) as info:
        load_segmentation_dataset("folder", image_size=(8, 8), channels=1, seed=0, data_dir=str(tmp_path / "nope"))
    assert "\n" not in str(info.value) and "nope" in str(info.value)
