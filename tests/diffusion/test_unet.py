import pytest
import torch

from diffusion.classifier import CLASSIFIER_PRESETS, NoiseClassifier
from diffusion.unet import UNET_PRESETS, UNet, UNetConfig


@pytest.mark.parametrize("preset", list(UNET_PRESETS))
def test_every_preset_maps_images_to_eps_of_the_same_shape(preset):
    model = UNet(UNET_PRESETS[preset]).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 999]), torch.tensor([3, 10]))
    assert out.shape == x.shape


def test_the_class_embedding_has_a_null_row():
    cfg = UNET_PRESETS["tiny"]
    model = UNet(cfg)
    assert model.class_embed.num_embeddings == cfg.num_classes + 1
    assert model.null_class == cfg.num_classes


def test_the_served_preset_fits_16_mb_in_fp16():
    model = UNet(UNET_PRESETS["fmnist"])
    assert sum(p.numel() * 2 for p in model.parameters()) < 16e6


def test_configurable_levels_attention_and_rgb():
    cfg = UNetConfig(image_size=32, in_channels=3, num_classes=4, base_channels=16, channel_mult=(1, 2, 2, 2),
                     num_res_blocks=1, attention_resolutions=(8, 4), head_channels=8, norm_groups=8)
    model = UNet(cfg).eval()
    assert sum(isinstance(m, torch.nn.MultiheadAttention) or type(m).__name__ == "SelfAttention"
               for m in model.modules()) == 2 * 1 + 2 * 2 + 1  # down, up (one more block), middle
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32), torch.tensor([5]), torch.tensor([4])).shape == (1, 3, 32, 32)


def test_config_round_trips_through_a_dict_and_checks_the_size():
    cfg = UNET_PRESETS["fmnist"]
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="image_size"):
        UNetConfig(image_size=30, channel_mult=(1, 2, 2))


def test_the_class_changes_the_prediction():
    model = UNet(UNET_PRESETS["tiny"]).eval()
    for p in model.parameters():  # the real init zeroes the output layer
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(1, 1, 28, 28), torch.tensor([500])
    with torch.no_grad():
        assert not torch.allclose(model(x, t, torch.tensor([1])), model(x, t, torch.tensor([2])))


@pytest.mark.parametrize("preset", list(CLASSIFIER_PRESETS))
def test_noise_classifier_gives_logits_per_class(preset):
    cfg = CLASSIFIER_PRESETS[preset]
    with torch.no_grad():
        out = NoiseClassifier(cfg)(torch.randn(3, 1, 28, 28), torch.tensor([0, 500, 999]))
    assert out.shape == (3, cfg.num_classes)
