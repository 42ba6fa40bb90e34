"""Model FLOPs utilisation (MFU) of a training run, for ``bench_training.py`` on a GPU.

MFU (PaLM, Chowdhery et al. 2022, appendix B) is the FLOPs a run's throughput implies divided by
the accelerator's peak: ``tokens/s x FLOPs per token / peak FLOP/s``. FLOPs per training token
follow Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", section 2.1): a forward
pass costs ``2 N + 2 n_layer n_ctx d_model`` (N: non-embedding parameters; the second term is
attention over the context), a backward pass twice that, so training costs 3x the forward pass.
"""

from __future__ import annotations

#: Dense bf16 tensor-core peaks (FLOP/s, no sparsity) from NVIDIA's datasheets, matched against
#: ``torch.cuda.get_device_name()`` in this order (the first name it contains wins).
BF16_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
)


def peak_bf16_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name, e.g. ``"NVIDIA L4"`` -> 1.21e14; None when the
    table does not know it (give ``--peak-tflops``)."""
    for key, flops in BF16_PEAK_FLOPS:
        if key in device_name:
            return flops
    return None


def train_flops_per_token(
    non_embedding_params: int, n_layers: int, context: int, d_model: int
) -> float:
    """Training FLOPs per token: 3 x (2 N + 2 n_layer n_ctx d_model) (module docstring)."""
    if min(non_embedding_params, n_layers, context, d_model) < 0:
        raise ValueError("parameter counts and sizes must be >= 0")
    return 3.0 * (2.0 * non_embedding_params + 2.0 * n_layers * context * d_model)


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation in [0, 1] (above 1 means the FLOPs count or the peak is wrong).
    Raises ValueError for a peak <= 0."""
    if peak_flops <= 0:
        raise ValueError(f"peak FLOP/s must be > 0, got {peak_flops}")
    return tokens_per_second * flops_per_token / peak_flops
