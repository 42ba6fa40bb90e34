"""Training throughput: the Trainer path (components.train_model.train) vs the hand-written loop
it replaced, and 2-process DDP vs 1 process.

1. **Trainer path vs the old loop.** ``train()`` (transformers.Trainer) against
   :func:`hand_loop`, a copy of the loop ``train_model`` ran before issue 14, kept here only as
   the named baseline: AdamW (fused), linear warmup/decay, clipping at 1.0, class-weighted
   cross-entropy, length-bucketed batches with dynamic padding, one random crop per file per
   epoch. Same model (the ``tiny`` preset's shape and tokenizer), data, batch size, max_length,
   learning rate and steps; both report optimizer-loop samples/s (data, forward, backward,
   optimizer step; not tokenization, validation or checkpoints). Target (issue 14): >= 0.95x.
   Both run under the allocator setting ``train()`` applies on CPU
   (``components.train_model.retain_freed_memory``, set once before either runs). Under glibc's
   defaults the gradients freed after every step went back to the OS and were page-faulted in
   again; the Trainer path lost ~15 % to it (0.83x), the loop by chance almost nothing.
2. **2 processes vs 1.** ``train()`` with ``train.distributed.processes_per_node: 2`` (torchrun,
   gloo, 1 thread per process) against 1 process with all cores as threads, at the same global
   batch (2 x batch/2 vs 1 x batch), so each step does the same work: the ratio is the speed-up.
   Wall time (torchrun and imports included) is printed beside it.
3. **On a GPU** (CUDA available; sections 1 and 2 are CPU comparisons and are skipped there):
   bf16 samples/s of ``train()`` for ``--gpu-presets`` (default tiny and minilm) and their model
   FLOPs utilisation (``benchmarks/flops.py``: Kaplan et al.'s 6N + attention FLOPs per token,
   at ``max_length`` tokens a sample, an upper bound with dynamic padding; against the dense
   bf16 peak of the GPU from its name, or ``--peak-tflops``).

One untimed 2-step warm-up of the in-process paths, then ``--repeats`` alternating runs;
medians are reported with the load average (the machine may be shared), then one ``RESULT`` line.
Data (default): source files of this Python environment, labelled by extension;
``--source synthetic`` uses generated snippets instead.

    .venv/bin/python benchmarks/bench_training.py --max-steps 40 --repeats 2
"""

import argparse
import math
import os
import random
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from a checkout: import this tree's packages
os.environ["PYTHONPATH"] = os.pathsep.join(  # the torchrun workers import this tree too
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
)

EXTENSIONS = {
    ".py": "Python",
    ".c": "C",
    ".h": "C",
    ".cpp": "C++",
    ".js": "JavaScript",
    ".css": "CSS",
    ".sh": "Shell",
    ".json": "JSON",
    ".md": "Markdown",
    ".pyx": "Cython",
    ".html": "HTML",
    ".yaml": "YAML",
    ".toml": "TOML",
}


def site_packages_frame(per_language: int, seed: int):
    """Up to ``per_language`` files per language from site-packages + stdlib (64 B .. 50 kB)."""
    import pandas as pd

    roots = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["stdlib"])}
    found: dict[str, list[Path]] = {lang: [] for lang in set(EXTENSIONS.values())}
    for root in sorted(roots):
        for dirpath, _, names in os.walk(root):
            for name in sorted(names):
                lang = EXTENSIONS.get(Path(name).suffix.lower())
                if lang and len(found[lang]) < per_language * 20:
                    found[lang].append(Path(dirpath) / name)
    rng = random.Random(seed)
    rows = []
    for lang, paths in sorted(found.items()):
        rng.shuffle(paths)
        kept = 0
        for path in paths:
            try:
                size = path.stat().st_size
                if not 64 <= size <= 50_000:
                    continue
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            rows.append({"repository": "bench", "path": str(path), "language": lang, "text": text})
            kept += 1
            if kept >= per_language:
                break
    frame = pd.DataFrame(rows)
    return frame[frame.groupby("language")["language"].transform("size") >= 10].reset_index(
        drop=True
    )


def synthetic_frame(per_language: int, seed: int):
    from tests.components.test_train_model import make_split

    return make_split(per_language, seed)


def write_features(frame, out: Path, seed: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n_val = max(10, len(frame) // 20)
    frame.iloc[n_val:].to_parquet(out / "train.parquet")
    frame.iloc[:n_val].to_parquet(out / "val.parquet")
    frame.iloc[:n_val].to_parquet(out / "test.parquet")
    return out


def hand_loop(features: Path, cfg) -> float:
    """The training loop of ``components/train_model.py`` before issue 14 (the baseline).

    Returns optimizer-loop samples/s over ``cfg.max_steps`` steps.
    """
    import numpy as np
    import pandas as pd
    import torch
    from transformers import set_seed

    from aicrush.text_window import crop_source, random_crop
    from components.model_builder import build_model_and_tokenizer
    from components.training_data import class_weights

    train_df = pd.read_parquet(features / "train.parquet")
    labels = sorted(str(x) for x in train_df["language"].unique())
    texts = train_df["text"].astype(str).tolist()
    set_seed(cfg.seed)
    with tempfile.TemporaryDirectory() as work:
        model, tokenizer, max_length = build_model_and_tokenizer(cfg, labels, texts, Path(work))
    ids = tokenizer([crop_source(t, max_length) for t in texts], truncation=False)["input_ids"]
    ids = [list(x) for x in ids]
    lengths = np.array([min(len(x), max_length) for x in ids])
    y = np.array([labels.index(str(x)) for x in train_df["language"]], dtype=np.int64)
    weight = class_weights(y, len(labels), cfg.class_weighting)
    pad = tokenizer.pad_token_id or 0

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        small = param.ndim < 2 or "LayerNorm" in name or name.endswith(".bias")
        (no_decay if small else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)
    total = cfg.max_steps
    warmup = math.ceil(total * cfg.warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def epoch_batches(epoch: int) -> list:
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(lengths))
        chunk, batches = cfg.batch_size * 50, []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(-lengths[part], kind="stable")]
            batches += [part[i : i + cfg.batch_size] for i in range(0, len(part), cfg.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    model.train()
    step, seconds, samples = 0, 0.0, 0
    per_epoch = math.ceil(len(ids) / cfg.batch_size)
    while step < total:
        epoch, pos = divmod(step, per_epoch)
        if pos == 0:
            batches = epoch_batches(epoch)
            rng = np.random.default_rng([cfg.seed, epoch, 1])
            rows = [random_crop(x, max_length, rng) for x in ids]
        t0 = time.perf_counter()
        idx = batches[pos]
        width = max(len(rows[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            input_ids[r, : len(rows[i])] = torch.as_tensor(rows[i])
            mask[r, : len(rows[i])] = 1
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float(), torch.from_numpy(y[idx]), weight=weight
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())
        seconds += time.perf_counter() - t0
        samples += len(idx)
        step += 1
    return samples / seconds


def run_trainer(features: Path, cfg, work: Path) -> tuple[float, float]:
    """``components.train_model.train``: (optimizer-loop samples/s, wall seconds)."""
    sps, wall, _ = run_trainer_out(features, cfg, work)
    return sps, wall


def run_trainer_out(features: Path, cfg, work: Path) -> tuple[float, float, Path]:
    """As :func:`run_trainer`, plus the model folder it wrote."""
    from components.train_model import train

    out = Path(tempfile.mkdtemp(dir=work))
    t0 = time.perf_counter()
    result = train(features, cfg, out / "model", out / "ckpt")
    return result.metrics["samples_per_second"], time.perf_counter() - t0, out / "model"


def gpu_section(
    features: Path, presets: list[str], max_steps: int, seed: int, work: Path,
    device_name: str, peak_flops: float | None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """bf16 samples/s and MFU of ``train()`` per preset (section 3): {preset: {sps, mfu}}
    (mfu NaN without a known peak). Runs on CPU too (bf16 then off), which is how it is tested."""
    from transformers import AutoConfig

    from aicrush.config import PRESETS, TrainConfig
    from aicrush.model_folder import TextClassifier
    from benchmarks.flops import mfu, train_flops_per_token

    out: dict[str, dict[str, float]] = {}
    for preset in presets:
        values = dict(PRESETS[preset]["train"])
        values.update(max_steps=max_steps, checkpoint_every_steps=10**9, seed=seed, bf16=True)
        cfg = TrainConfig(**values)
        run_trainer_out(features, cfg.model_copy(update={"max_steps": 2}), work)  # warm-up
        sps, wall, model_dir = run_trainer_out(features, cfg, work)
        config = AutoConfig.from_pretrained(model_dir)
        model = TextClassifier.from_dir(model_dir, device="cpu").model
        n = model.num_parameters(exclude_embeddings=True)
        per_token = train_flops_per_token(
            n, config.num_hidden_layers, cfg.max_length, config.hidden_size
        )
        tokens = sps * cfg.max_length
        util = mfu(tokens, per_token, peak_flops) if peak_flops else float("nan")
        out[preset] = {"sps": sps, "mfu": util}
        peak = f"{peak_flops / 1e12:.0f} TFLOP/s" if peak_flops else "unknown peak"
        print(
            f"{preset}: bf16 {sps:.1f} samples/s (batch {cfg.batch_size}, {cfg.max_length} tokens, "
            f"{n / 1e6:.1f} M non-embedding parameters, {wall:.1f} s wall); MFU {util:.3%} of "
            f"{peak} ({device_name})",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source",
        choices=("site-packages", "synthetic"),
        default="site-packages",
        help="data: this Python's own source files labelled by extension, or generated snippets",
    )
    parser.add_argument(
        "--per-language", type=int, default=120, help="files per language (default 120)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=40, help="optimizer steps per run (default 40)"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="0: the tiny preset's (32)")
    parser.add_argument("--max-length", type=int, default=0, help="0: the tiny preset's (64)")
    parser.add_argument(
        "--num-threads", type=int, default=0, help="torch CPU threads of 1 process (0: all cores)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="alternating runs of each; medians reported"
    )
    parser.add_argument("--no-ddp", action="store_true", help="skip the 2-process comparison")

    parser.add_argument("--seed", type=int, default=0, help="data sample and training seed")
    parser.add_argument(
        "--gpu-presets", default="tiny,minilm", help="presets of section 3 (GPU only)"
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=0.0,
        help="the GPU's dense bf16 peak for MFU (0: from its name, benchmarks/flops.py)",
    )
    args = parser.parse_args(argv)

    import torch

    from aicrush.config import PRESETS, DistributedConfig, TrainConfig

    values = dict(PRESETS["tiny"]["train"])
    values.update(
        max_steps=args.max_steps,
        checkpoint_every_steps=10**9,
        num_threads=args.num_threads,
        seed=args.seed,
    )
    if args.batch_size:
        values["batch_size"] = args.batch_size
    if args.max_length:
        values["max_length"] = args.max_length
    cfg = TrainConfig(**values)
    torch.set_num_threads(args.num_threads or os.cpu_count() or 1)
    from components.train_model import retain_freed_memory

    retain_freed_memory()  # what train() sets on CPU: the loop is measured under it too

    with tempfile.TemporaryDirectory(prefix="aicrush-bench-") as tmp:
        work = Path(tmp)
        t_data = time.perf_counter()
        frame = (
            site_packages_frame(args.per_language, args.seed)
            if args.source == "site-packages"
            else synthetic_frame(args.per_language, args.seed)
        )
        features = write_features(frame, work / "features", args.seed)
        device = (
            "cuda " + torch.cuda.get_device_name()
            if torch.cuda.is_available()
            else f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
        )
        print(
            f"data: {args.source}, {len(frame)} files, {frame['language'].nunique()} languages "
            f"({time.perf_counter() - t_data:.1f} s to collect); device: {device}",
            flush=True,
        )
        print(
            f"model: tiny preset (hidden {cfg.hidden_size}, layers {cfg.num_layers}), batch "
            f"{cfg.batch_size}, max_length {cfg.max_length}, {cfg.max_steps} steps",
            flush=True,
        )
        if torch.cuda.is_available():  # section 3 only: 1 and 2 compare CPU paths
            from benchmarks.flops import peak_bf16_flops

            name = torch.cuda.get_device_name()
            peak = args.peak_tflops * 1e12 or peak_bf16_flops(name)
            presets = [p.strip() for p in args.gpu_presets.split(",") if p.strip()]
            res = gpu_section(features, presets, args.max_steps, args.seed, work, name, peak)
            fields = " ".join(
                f"gpu_{p}_sps={v['sps']:.1f} gpu_{p}_mfu_pct={100 * v['mfu']:.3f}"
                for p, v in res.items()
            )
            print(f"RESULT {fields}", flush=True)
            return 0
        warm = cfg.model_copy(update={"max_steps": 2})
        hand_loop(features, warm)  # untimed: lazy imports, allocator, kernel selection
        run_trainer(features, warm, work)
        ours, loop = [], []
        for rep in range(args.repeats):  # alternate who goes first: neither always runs warmer
            if rep % 2 == 0:
                ours.append(run_trainer(features, cfg, work)[0])
                loop.append(hand_loop(features, cfg))
            else:
                loop.append(hand_loop(features, cfg))
                ours.append(run_trainer(features, cfg, work)[0])
            print(
                f"run {rep + 1}: train() {ours[-1]:.1f} samples/s, hand loop {loop[-1]:.1f} "
                f"samples/s; load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        a, b = statistics.median(ours), statistics.median(loop)
        print(f"train() (Trainer): {a:.1f} samples/s (median of {len(ours)})", flush=True)
        print(f"hand loop:         {b:.1f} samples/s (median of {len(loop)})", flush=True)
        print(f"ratio:             {a / b:.2f}x  (target >= 0.95x)", flush=True)
        result = f"RESULT trainer_vs_loop={a / b:.2f}x"

        if not args.no_ddp and not torch.cuda.is_available():
            # Same global batch: 1 process x 2h rows per step vs 2 processes x h rows each.
            half = max(1, cfg.batch_size // 2)
            cores = os.cpu_count() or 1
            runs = {
                f"1 process, {cores} threads": cfg.model_copy(
                    update={"batch_size": 2 * half, "num_threads": 0}
                ),
                "1 process, 1 thread": cfg.model_copy(
                    update={"batch_size": 2 * half, "num_threads": 1}
                ),
                "2 processes, 1 thread each": cfg.model_copy(
                    update={"batch_size": half, "num_threads": 0,
                            "distributed": DistributedConfig(processes_per_node=2)}
                ),
            }  # fmt: skip
            sps: dict[str, list[float]] = {name: [] for name in runs}
            for rep in range(args.repeats):
                names = list(runs) if rep % 2 == 0 else list(runs)[::-1]
                for name in names:
                    s, wall = run_trainer(features, runs[name], work)
                    sps[name].append(s)
                    print(
                        f"run {rep + 1}: {name}: {s:.1f} samples/s ({wall:.1f} s wall); "
                        f"load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
            med = {name: statistics.median(v) for name, v in sps.items()}
            two = med["2 processes, 1 thread each"]
            one_all, one_single = med[f"1 process, {cores} threads"], med["1 process, 1 thread"]
            for name, value in med.items():
                print(f"{name + ':':29s} {value:.1f} samples/s (median)", flush=True)
            print(
                f"2 processes vs 1 process with {cores} threads: {two / one_all:.2f}x; "
                f"vs 1 process with 1 thread: {two / one_single:.2f}x",
                flush=True,
            )
            result += f" ddp2_vs_1={two / one_all:.2f}x ddp2_vs_1thread={two / one_single:.2f}x"
        load = os.getloadavg()
        print(f"{result} load={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"wall: {time.perf_counter() - t0:.1f} s", flush=True)
    sys.exit(rc)
