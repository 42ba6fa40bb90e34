"""bench_training's GPU section (bf16 samples/s and MFU), run here on CPU, and its FLOPs count."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.flops import mfu, peak_bf16_flops, train_flops_per_token


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA L4", 121e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-40GB", 312e12),
        ("NVIDIA L40S", 362e12),  # not read as an L4
        ("Tesla T4", None),
    ],
)
def test_peak_bf16_flops_by_device_name(name: str, peak: float | None) -> None:
    assert peak_bf16_flops(name) == peak


def test_train_flops_are_three_forward_passes_of_kaplan_et_al() -> None:
    # N = 1e6 non-embedding parameters, 2 layers, 64 tokens, d_model 128:
    # forward 2e6 + 2*2*64*128 = 2,032,768 FLOPs a token; training 3x that.
    assert train_flops_per_token(10**6, 2, 64, 128) == 3 * 2_032_768
    assert mfu(1000.0, 6e6, 6e9) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mfu(1.0, 1.0, 0.0)


def test_gpu_section_reports_samples_per_second_and_mfu(tmp_path: Path) -> None:
    from benchmarks.bench_training import gpu_section, synthetic_frame, write_features

    features = write_features(synthetic_frame(12, 0), tmp_path / "features", 0)
    out = gpu_section(features, ["tiny"], 3, 0, tmp_path, "cpu", peak_flops=1e12)
    assert set(out) == {"tiny"}
    assert out["tiny"]["sps"] > 0 and 0 < out["tiny"]["mfu"] < 1
