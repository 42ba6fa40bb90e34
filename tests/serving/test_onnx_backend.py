"""The ONNX Runtime backend: same texts read the same way, same labels as torch, no torch import.

Random-weight models check the plumbing (shapes, windows, errors, the import boundary); a tiny
model trained here (the ``tiny`` preset on the README tests' small corpus) checks that the
served labels are the torch model's, over V1 and V2 on a real server on loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from aicrush.model_folder import MODEL_META_FILE, TextClassifier
from serving.onnx_backend import (
    BACKEND_META_KEY,
    ONNX_FILES,
    MissingOnnxFiles,
    OnnxBackend,
    export_onnx,
)
from serving.predictor import resolve_backend
from tests.serving import REPO_ROOT, SNIPPETS, running_server, v2_body

#: Started as ``python NO_TORCH ARGS...``: serving.server.main with torch made unimportable.
NO_TORCH = (
    "import sys\n"
    "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
    "from serving.server import main\n"
    "main(sys.argv[1:])\n"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, random_model_dir: Path) -> Path:
    """A copy of the random model with its ONNX files, reading texts as 3 crops of 32 tokens."""
    folder = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(random_model_dir, folder)
    meta = json.loads((folder / MODEL_META_FILE).read_text())
    meta.update(text_window="crops", crops=3, max_length=32)
    (folder / MODEL_META_FILE).write_text(json.dumps(meta))
    files = export_onnx(folder)
    assert set(files) == {"onnx", "onnx-int8"} and all(p.is_file() for p in files.values())
    return folder


def test_export_records_its_files_in_aicrush_json(exported: Path) -> None:
    meta = json.loads((exported / MODEL_META_FILE).read_text())
    assert meta["onnx"]["files"] == ONNX_FILES
    assert meta["onnx"]["opset"] >= 17


def test_onnx_reads_texts_as_torch_does_and_gives_its_probabilities(exported: Path) -> None:
    texts = [*SNIPPETS, "\n".join(SNIPPETS * 8)]  # short ones (one window) and a long one (3)
    reference = TextClassifier.from_dir(exported, device="cpu").predict_proba(texts)
    probs, lengths = OnnxBackend(exported, "onnx").forward(texts)
    assert probs.shape == reference.shape == (len(texts), 5)
    assert np.abs(probs - reference).max() < 1e-5
    assert (probs.argmax(1) == reference.argmax(1)).all()
    assert lengths[-1] == 3 * 32  # the long text was read as three full windows
    int8, _ = OnnxBackend(exported, "onnx-int8").forward(texts)
    assert int8.shape == reference.shape and np.allclose(int8.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_a_text_gets_the_same_probabilities_whatever_it_is_batched_with(
    exported: Path, backend: str
) -> None:
    """The server's guarantee, for ONNX Runtime too: batched results are bit-for-bit those of
    each text alone (int8: each text's windows run as their own call, see OnnxBackend.forward)."""
    texts = [*SNIPPETS, "\n".join(SNIPPETS * 8), *SNIPPETS[::-1]]
    onnx = OnnxBackend(exported, backend)
    batched, _ = onnx.forward(texts, 64)
    alone = np.concatenate([onnx.forward([t], 1)[0] for t in texts])
    assert np.array_equal(batched, alone)


def test_bucket_by_length_keeps_groups_apart_and_whole() -> None:
    from serving.batching import bucket_by_length

    lengths, owner = [4, 4, 4, 2, 4, 4], [0, 0, 1, 2, 1, 1]
    assert bucket_by_length(lengths, 2) == [[0, 1], [2, 4], [5], [3]]
    assert bucket_by_length(lengths, 1, owner) == [[0, 1], [2, 4, 5], [3]]


def tokenization_cases() -> list[str]:
    long_file = "\n".join(SNIPPETS * 40)  # over max_length x CROP_SPAN tokens
    return [*SNIPPETS, long_file, "", "  \t\n", "naïve café 日本語 🙂 " * 30]


@pytest.mark.parametrize(
    ("window", "crops", "max_length"), [("crops", 8, 64), ("head+middle", 1, 128), ("head", 1, 32)]
)
def test_fast_tokenizer_gives_the_ids_transformers_gives(
    random_model_dir: Path, window: str, crops: int, max_length: int
) -> None:
    from transformers import AutoTokenizer

    from aicrush.text_window import model_inputs
    from serving.onnx_backend import FastTokenizer

    texts = tokenization_cases()
    hf = model_inputs(
        AutoTokenizer.from_pretrained(random_model_dir), texts, max_length, window, crops
    )
    ours = model_inputs(FastTokenizer(random_model_dir), texts, max_length, window, crops)
    assert ours == hf


def test_missing_onnx_file_says_how_to_get_it(random_model_dir: Path) -> None:
    with pytest.raises(
        MissingOnnxFiles, match=r"model\.int8\.onnx.*python -m serving\.onnx_backend"
    ):
        OnnxBackend(random_model_dir, "onnx-int8")
    # auto: what aicrush.json records, else torch
    assert resolve_backend(random_model_dir, "auto") == "torch"
    with pytest.raises(ValueError, match="choose one of auto, torch, onnx, onnx-int8"):
        resolve_backend(random_model_dir, "tensorrt")


def test_server_refuses_onnx_for_a_folder_without_onnx_files(
    random_model_dir: Path, tmp_path: Path
) -> None:
    refused = pytest.raises(RuntimeError, match=r"has no model\.onnx.*--backend torch")
    with refused, running_server(random_model_dir, tmp_path, "--backend", "onnx"):
        pass


def test_onnx_server_runs_without_torch_and_answers_like_torch(
    exported: Path, tmp_path: Path
) -> None:
    """Real server, torch unimportable in its process: V1 and V2 answers carry the labels of the
    fp32 torch model; bad input is still a 400 that says what is wrong."""
    script = tmp_path / "no_torch_server.py"
    script.write_text(NO_TORCH)
    reference = TextClassifier.from_dir(exported, device="cpu").predict(SNIPPETS)
    with running_server(
        exported, tmp_path, "--backend", "onnx", "--batch_workers", "3", launcher=[str(script)]
    ) as srv:
        v1 = httpx.post(
            f"{srv.url}/v1/models/{srv.name}:predict",
            json={"instances": [{"text": t} for t in SNIPPETS]},
            timeout=30,
        )
        assert v1.status_code == 200, v1.text
        assert [p["label"] for p in v1.json()["predictions"]] == [p.label for p in reference]
        v2 = httpx.post(f"{srv.url}/v2/models/{srv.name}/infer", json=v2_body(SNIPPETS), timeout=30)
        labels = next(o["data"] for o in v2.json()["outputs"] if o["name"] == "label")
        assert labels == [p.label for p in reference]
        meta = httpx.get(f"{srv.url}/v2/models/{srv.name}", timeout=10).json()
        assert meta["platform"] == "onnxruntime" and meta["parameters"]["backend"] == "onnx"
        bad = httpx.post(
            f"{srv.url}/v2/models/{srv.name}/infer",
            json={"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
            timeout=10,
        )
        assert bad.status_code == 400 and "BYTES" in bad.text
        assert (
            httpx.post(f"{srv.url}/v1/models/{srv.name}:predict", json={}, timeout=10).status_code
            == 400
        )
    # Any 'import torch' in the server process would have raised: it served, and logged no error.
    log = srv.log_path.read_text()
    assert "Traceback" not in log
    assert "backend onnx, 3 batch worker(s) x 1 intra-op thread(s)" in log  # says how it serves


def test_auto_serves_the_backend_recorded_at_registration(exported: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    meta = json.loads((folder / MODEL_META_FILE).read_text())
    meta[BACKEND_META_KEY] = "onnx-int8"
    (folder / MODEL_META_FILE).write_text(json.dumps(meta))
    assert resolve_backend(folder, "auto") == "onnx-int8"
    assert resolve_backend(folder, "torch") == "torch"


def test_onnx_backend_module_does_not_import_torch(exported: Path) -> None:
    code = (
        "import sys\n"
        "from serving.predictor import load_backend\n"
        f"b = load_backend({str(exported)!r}, 'onnx-int8')\n"
        "b.forward(['def f():\\n    return 1\\n'])\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-2000:]


# --------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The tiny preset trained on the README tests' corpus, with its ONNX files; test texts."""
    import pandas as pd

    from aicrush.config import build_config
    from components.train_model import train
    from tests.serving.test_readme_examples import corpus

    root = tmp_path_factory.mktemp("onnx-trained")
    features = corpus(root / "features")
    cfg = build_config({"train": {"num_threads": 1}}, preset="tiny")
    train(features, cfg.train, root / "model", root / "ckpt", preset="tiny")
    export_onnx(root / "model")
    texts = pd.read_parquet(features / "test.parquet")["text"].tolist()
    return root / "model", texts


@pytest.mark.integration  # training the tiny preset here takes seconds
def test_trained_model_served_with_onnx_gives_the_torch_labels(trained, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from aicrush.text_window import model_inputs
    from serving.onnx_backend import FastTokenizer

    model_dir, texts = trained
    # The tiny preset trains its own tokenizer: the ONNX path reads it as transformers does.
    cases = [*texts, *tokenization_cases()]
    assert model_inputs(FastTokenizer(model_dir), cases, 64, "crops", 8) == model_inputs(
        AutoTokenizer.from_pretrained(model_dir), cases, 64, "crops", 8
    )
    reference = [p.label for p in TextClassifier.from_dir(model_dir, device="cpu").predict(texts)]
    assert len(set(reference)) >= 3  # a model that learned something, not one constant label
    for backend in ("onnx", "onnx-int8"):
        with running_server(model_dir, tmp_path, "--backend", backend) as srv:
            got = httpx.post(
                f"{srv.url}/v1/models/{srv.name}:predict",
                json={"instances": [{"text": t} for t in texts]},
                timeout=60,
            ).json()["predictions"]
        agreement = np.mean([g["label"] == r for g, r in zip(got, reference, strict=True)])
        assert agreement >= (1.0 if backend == "onnx" else 0.995), (backend, agreement)


def test_aicrush_serve_says_what_to_do_for_a_folder_without_onnx_files(
    random_model_dir: Path, state_dir: Path
) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app
    from tests.serving import free_port

    args = ["serve", "--path", str(random_model_dir), "--state-dir", str(state_dir)]
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port())]
    result = CliRunner().invoke(app, [*args, *ports, "--backend", "onnx-int8"])
    assert result.exit_code == 2, result.output
    assert "has no model.int8.onnx" in result.output
    assert "python -m serving.onnx_backend" in result.output
    wrong = CliRunner().invoke(app, [*args, "--backend", "tensorrt"])
    assert wrong.exit_code == 2 and "choose one of auto, torch, onnx, onnx-int8" in flat(
        wrong.output
    )
    both = CliRunner().invoke(app, [*args, "--backend", "onnx", "--quantize"])
    assert both.exit_code == 2 and "use --backend onnx-int8" in flat(both.output)


def flat(output: str) -> str:
    """Typer's boxed error text as one line (box characters and line breaks removed)."""
    import re

    return " ".join(re.sub(r"[\u2500-\u257f]", " ", output).split())


@pytest.mark.parametrize("backend", ["torch", "onnx-int8"])
def test_a_backend_called_from_several_threads_at_once_answers_as_alone(
    exported: Path, backend: str
) -> None:
    """``--batch_workers`` > 1 runs forward passes on several threads at once (ONNX Runtime and
    torch release the GIL): long and short texts in flight together from 8 threads, every answer
    bit-for-bit the one the text gets alone (no state shared between calls: tokenizer settings,
    buffers, the int8 per-text calls)."""
    from concurrent.futures import ThreadPoolExecutor

    from serving.predictor import load_backend

    model = load_backend(exported, backend, threads=1)
    texts = [*SNIPPETS, "\n".join(SNIPPETS * 8), "x = 1", "\n".join(SNIPPETS * 3)]
    alone = [model.forward([t], 1)[0] for t in texts]
    jobs = [texts[i % len(texts) :] + texts[: i % len(texts)] for i in range(48)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda batch: model.forward(batch, 64)[0], jobs))
    for i, probs in enumerate(results):
        order = texts[i % len(texts) :] + texts[: i % len(texts)]
        expected = np.concatenate([alone[texts.index(t)] for t in order])
        assert np.array_equal(probs, expected), i


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_trained_model_answers_each_text_as_alone_in_any_batch(trained, backend: str) -> None:
    """The result guarantee on a trained model with long texts (several 64-token windows each):
    a text's probabilities in a batch of others, at the server's batch size, are bit-for-bit
    those it gets alone. ONNX Runtime's fp32 kernels too give a row a result that depends on the
    rows sharing its call (measured here: 18 of 93 texts differed by ~1e-8 when windows of several
    texts shared calls), so both ONNX backends run each text's windows as their own call."""
    import pandas as pd

    model_dir, texts = trained
    texts = (
        texts + pd.read_parquet(model_dir.parent / "features" / "train.parquet")["text"].tolist()
    )
    long = ["\n".join(texts[i : i + 6]) for i in range(0, 36, 6)]
    batch = [*long, *texts[:93]]  # 93: where rows of several texts sharing calls differed
    onnx = OnnxBackend(model_dir, backend)
    together, _ = onnx.forward(batch, 32)
    alone = np.concatenate([onnx.forward([t], 32)[0] for t in batch])
    assert np.array_equal(together, alone)
