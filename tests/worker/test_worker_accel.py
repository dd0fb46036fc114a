"""worker.accel: the GPU fast path (bf16, channels_last, CUDA graphs per bucket) and what it rests
on. The CPU tests pin down that it changes nothing on the CPU and that bucket padding cannot change
the real rows; the CUDA tests (skipped without a GPU) compare it with the fp32 model."""

from __future__ import annotations

import pytest
import torch

from diffusion.sampling import SampleSpec, sample, specs_for_request
from worker.accel import OFF, AccelConfig, Accelerated, default_buckets
from worker.cpu_accel import CpuAccelConfig
from worker.engine import BatchEngine

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device)")


def inputs(n: int, gen, seed: int = 0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *gen.image_shape), generator=g).to(device)
    t = torch.randint(0, 1000, (n,), generator=g).to(device)
    y = torch.randint(0, gen.num_classes + 1, (n,), generator=g).to(device)
    return x, t, y


def test_buckets_are_powers_of_two_up_to_the_largest_pass():
    assert default_buckets(1) == (1,)
    assert default_buckets(128) == (1, 2, 4, 8, 16, 32, 64, 128)
    assert default_buckets(100) == (1, 2, 4, 8, 16, 32, 64, 128)
    assert AccelConfig(max_rows=5).buckets == (1, 2, 4, 8)


def test_sizes_given_replace_the_powers_of_two():
    assert AccelConfig(max_rows=8192, sizes=(4096, 1808, 2048, 3616, 2048)).buckets == (1808, 2048, 3616, 4096)
    for bad in ((0,), (-2, 4), (2.5,)):
        with pytest.raises(ValueError, match="sizes"):
            AccelConfig(sizes=bad)


def test_capture_refuses_a_model_in_training_mode(generators):
    gen = generators["fashion-mnist"]
    fast = Accelerated(gen.model, AccelConfig())
    gen.model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            fast.capture(gen.image_shape, gen.num_classes)
    finally:
        gen.model.eval()


def test_on_the_cpu_the_wrapper_is_the_model_itself(generators):
    gen = generators["fashion-mnist"]
    fast = Accelerated(gen.model, AccelConfig())
    assert fast.capture(gen.image_shape, gen.num_classes) == 0.0 and fast.buckets == ()
    x, t, y = inputs(5, gen)
    with torch.no_grad():
        assert torch.equal(fast(x, t, y), gen.model(x, t, y))


def test_padding_rows_never_change_the_real_rows(generators):
    """What bucket padding rests on: every layer of the U-Net works per image, so rows added to a
    batch (as a bucket pads it: zeros at t = 0, the null class) leave the others as they were."""
    gen = generators["fashion-mnist"]
    x, t, y = inputs(3, gen)
    pad = 5
    with torch.no_grad():
        alone = gen.model(x, t, y)
        padded = gen.model(torch.cat([x, torch.zeros(pad, *x.shape[1:])]),
                           torch.cat([t, torch.zeros(pad, dtype=torch.long)]),
                           torch.cat([y, torch.full((pad,), gen.num_classes)]))
    assert torch.allclose(padded[:3], alone, rtol=1e-5, atol=1e-5)


def test_the_cuda_mode_asked_for_on_the_cpu_gives_the_same_images(generators):
    """The CUDA fast path changes nothing on the CPU (the CPU's own, ONNX Runtime, is left out here:
    tests/worker/test_worker_cpu_accel.py holds it to the eager engine)."""
    req = {"model": "fashion-mnist", "class_label": 2, "num_images": 3, "guidance": "cfg", "guidance_scale": 3.0,
           "sampler": "ddim", "steps": 5, "eta": 0.0, "seed": 7}
    images = []
    for accel in (None, AccelConfig(cpu=CpuAccelConfig(backend="eager"))):
        engine = BatchEngine(generators, 16, accel=accel)
        engine.warm_up()
        engine.add("j", "fashion-mnist", req)
        while "j" in engine.jobs():
            report = engine.step()
        images.append(report.finished["j"])
    assert torch.equal(images[0], images[1])


# --- on the GPU -------------------------------------------------------------------------------------

@cuda
def test_graphs_replay_what_the_eager_bf16_pass_computes_for_every_batch_size(generators):
    gen = generators["fashion-mnist"]
    model = gen.model.to("cuda")
    try:
        fast = Accelerated(model, AccelConfig(max_rows=16))
        assert fast.capture(gen.image_shape, gen.num_classes) > 0 and fast.buckets == (1, 2, 4, 8, 16)
        for n in (1, 3, 8, 13, 16, 20):  # 20: over every bucket, eager
            x, t, y = inputs(n, gen, seed=n, device="cuda")
            with torch.no_grad():
                got = fast(x, t, y)
                eager = fast._eager(x, t, y).float()
                reference = model.float()(x.contiguous(), t, y)
            assert got.dtype == torch.float32 and got.shape == x.shape
            assert torch.allclose(got, eager, rtol=1e-2, atol=1e-2), (n, (got - eager).abs().max())
            # bf16 against fp32: close, not equal
            assert (got - reference).abs().mean() < 0.02 * reference.abs().mean() + 1e-3, n
    finally:
        model.to("cpu", memory_format=torch.contiguous_format)


@cuda
def test_graphs_of_given_sizes_share_one_pool_and_replay_what_eager_computes(generators):
    gen = generators["fashion-mnist"]
    model = gen.model.to("cuda")
    try:
        fast = Accelerated(model, AccelConfig(sizes=(24, 6, 12)))
        fast.capture(gen.image_shape, gen.num_classes)
        assert fast.buckets == (6, 12, 24)
        # one pool for all: the graphs were captured into the pool of the first (largest) one
        pools = {g.graph.pool() for g in fast._graphs.values()}
        assert len(pools) == 1, pools
        # replayed smallest, largest, middle: each graph's output is copied out before the next runs
        for n in (5, 24, 9, 6, 30):  # 30: over every size, eager
            x, t, y = inputs(n, gen, seed=n, device="cuda")
            with torch.no_grad():
                got = fast(x, t, y)
                eager = fast._eager(x, t, y).float()
            assert torch.allclose(got, eager, rtol=1e-2, atol=1e-2), (n, (got - eager).abs().max())
    finally:
        model.to("cpu", memory_format=torch.contiguous_format)


@cuda
def test_the_accelerated_engine_samples_what_the_fp32_loop_samples(generators):
    gen = generators["fashion-mnist"]
    gen.model.to("cuda")
    try:
        spec = SampleSpec(class_label=4, guidance_scale=3.0, sampler="ddim", steps=20, seed=5)
        want = sample(gen.model, gen.schedule, specs_for_request(spec, 6), gen.image_shape, gen.num_classes,
                      device="cuda", clip_x0=gen.clip_x0).cpu()
        for accel in (OFF, AccelConfig()):
            engine = BatchEngine({"fashion-mnist": gen}, 8, accel=accel)
            engine.warm_up()
            engine.add("j", "fashion-mnist", {"class_label": 4, "num_images": 6, "guidance": "cfg",
                                              "guidance_scale": 3.0, "sampler": "ddim", "steps": 20, "eta": 0.0,
                                              "seed": 5})
            while "j" in engine.jobs():
                report = engine.step()
            got = report.finished["j"]
            if accel is OFF:
                assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
            else:
                assert (got.clamp(-1, 1) - want.clamp(-1, 1)).abs().mean() < 0.05
    finally:
        gen.model.to("cpu", memory_format=torch.contiguous_format)
