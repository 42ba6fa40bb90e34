"""`aicrush compile|submit --pipeline training|rollout`: both pipelines compile for the cluster,
and no compiled component installs anything when its pod starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aicrush.config import build_config
from pipelines.cli import app
from pipelines.compile import compile_pipeline

runner = CliRunner()


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("pipeline", ["training", "rollout"])
def test_cli_compiles_each_pipeline(tmp_path: Path, pipeline: str) -> None:
    out = tmp_path / f"{pipeline}.yaml"
    result = runner.invoke(app, ["compile", "--pipeline", pipeline, "--output", str(out)])
    assert result.exit_code == 0, result.output
    spec = _docs(out)[0]
    assert spec["pipelineInfo"]["name"] == f"aicrush-{pipeline}"
    for name, executor in spec["deploymentSpec"]["executors"].items():
        script = " ".join(
            executor["container"].get("command", []) + executor["container"].get("args", [])
        )
        assert "pip install" not in script and "pip3 install" not in script, name
        assert "kfp.dsl.executor_main" in script, name


def test_rollout_pipeline_carries_the_config_and_the_mlflow_server(tmp_path: Path) -> None:
    cfg = build_config(
        {
            "registry": {"tracking_uri": "http://mlflow.aicrush:5000"},
            "rollout": {"steps": [50, 100]},
        }
    )
    spec, platform = _docs(compile_pipeline("rollout", tmp_path / "r.yaml", cfg))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["config"]["defaultValue"]["rollout"]["steps"] == [50, 100]
    assert params["backend"]["defaultValue"] == "kubernetes"
    for executor in spec["deploymentSpec"]["executors"].values():
        env = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.aicrush:5000"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(k8s) == 4 and all("secretAsEnv" in e for e in k8s.values())  # with the exit task


def test_unknown_pipeline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="choose one of training, rollout"):
        compile_pipeline("serving", tmp_path / "x.yaml")  # type: ignore[arg-type]
    result = runner.invoke(app, ["compile", "--pipeline", "serving"])
    assert result.exit_code != 0


def test_submit_sends_the_rollout_with_its_arguments(tmp_path: Path) -> None:
    from pipelines.submit import submit_pipeline

    class Client:  # stands in for kfp.Client (no KFP backend here); checks what it gets
        def create_run_from_pipeline_package(self, package, arguments, **kwargs):
            self.spec = _docs(Path(package))[0]
            self.arguments, self.kwargs = arguments, kwargs
            return type("Run", (), {"run_id": "r-1"})()

    client = Client()
    cfg = build_config()
    sub = submit_pipeline(
        "rollout", cfg, "http://kfp", arguments={"model_version": "7"}, client=client
    )
    assert sub.pipeline == "rollout" and sub.run_url == "http://kfp/#/runs/details/r-1"
    assert client.spec["pipelineInfo"]["name"] == "aicrush-rollout"
    assert client.arguments == {"config": cfg.to_dict(), "model_version": "7"}
    declared = set(client.spec["root"]["inputDefinitions"]["parameters"])
    assert set(client.arguments) <= declared


def test_submit_passes_pipeline_root_and_service_account() -> None:
    from pipelines.submit import submit_pipeline

    class Client:  # kfp.Client's create_run_from_pipeline_package takes both (kfp 2.17)
        def create_run_from_pipeline_package(self, package, arguments, **kwargs):
            self.kwargs = kwargs
            return type("Run", (), {"run_id": "r-2"})()

    client = Client()
    submit_pipeline(
        "training",
        build_config(),
        "http://kfp",
        client=client,
        pipeline_root="gs://b/pipeline-root",
        service_account="aicrush-runner",
    )
    assert client.kwargs["pipeline_root"] == "gs://b/pipeline-root"
    assert client.kwargs["service_account"] == "aicrush-runner"


@pytest.mark.parametrize(
    ("root", "said"),
    [
        ("pipeline-root", "not a URI with a bucket"),
        ("gs://", "not a URI with a bucket"),
        ("minio://mlpipeline/v2/artifacts", "give a gs:// root"),
    ],
)
def test_submit_refuses_a_pipeline_root_the_run_cannot_use(root: str, said: str) -> None:
    """A TrainJob's nodes exchange files through GCS: a MinIO root is refused before the
    cluster sees the run (the step would train on the CPU of a pod that requests no GPU)."""
    distributed = ["--config", str(_distributed_config())]
    result = runner.invoke(
        app, ["submit", "--host", "http://127.0.0.1:9", "--pipeline-root", root, *distributed]
    )
    assert result.exit_code == 2 and said in " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize(
    ("root", "said"),
    [
        ("gs:///x", "not a URI with a bucket"),
        ("GS://b/p", "write the scheme in lowercase"),
        (" gs://b/p", "holds spaces"),
    ],
)
def test_pipeline_root_spelling_is_checked(root: str, said: str) -> None:
    from pipelines.submit import check_pipeline_root

    with pytest.raises(ValueError, match=said):
        check_pipeline_root(root, build_config(), "training")
    check_pipeline_root("gs://b/p", build_config(), "training")


def test_submit_refuses_sources_the_cluster_pods_cannot_read(tmp_path: Path) -> None:
    """A folder or table on this machine passed `aicrush submit` and failed in the ingest pod."""
    from pipelines.submit import cluster_source_problems

    table = tmp_path / "t.csv"
    table.write_text("text,language\nx,Python\n")
    pins = tmp_path / "pins.txt"
    pins.write_text("requests==2.0.0\n")
    fine = [
        "gs://b/corpus",
        "https://github.com/org/repo.git",
        "git@github.com:org/repo.git",
        "pypi:requests==2.0.0",
        "pypi:default",
        "python-environment",
    ]
    local = [str(tmp_path), str(table), f"pypi:{pins}", f"file://{tmp_path}", "gs://"]
    elsewhere = ["/opt/corpus-in-a-custom-image"]  # not here: maybe in the image
    cfg = build_config({"ingest": {"sources": fine + local + elsewhere}})
    problems = cluster_source_problems(cfg)
    assert [p.fatal for p in problems] == [True] * len(local) + [False]
    assert all(repr(s) in p.message for s, p in zip(local + elsewhere, problems, strict=True))
    assert "names no bucket" in problems[4].message and "gcloud storage cp" in problems[0].message
    assert "pipeline image's own file system" in problems[-1].message

    result = runner.invoke(
        app, ["submit", "--host", "http://127.0.0.1:9", "--source", str(tmp_path)]
    )
    assert result.exit_code == 2 and "pods do not see" in result.output


@pytest.mark.parametrize("spec", ["requests", "requests>=2", "requests==2.*"])
def test_submit_says_an_unpinned_package_is_not_a_pin(spec: str) -> None:
    """`pypi:requests` is no file of this machine: it is refused as `aicrush run` refuses it."""
    from pipelines.submit import cluster_source_problems

    [problem] = cluster_source_problems(build_config({"ingest": {"sources": [f"pypi:{spec}"]}}))
    assert problem.fatal and "is not a pinned package: write NAME==VERSION" in problem.message
    assert "this machine's disk" not in problem.message


def test_submit_says_when_it_cannot_reach_kfp() -> None:
    result = runner.invoke(app, ["submit", "--host", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach Kubeflow Pipelines at http://127.0.0.1:9 (Connection refused)" in (
        result.output
    )
    assert "FutureWarning" not in result.output


def test_compile_warns_of_what_the_cluster_cannot_load(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("train:\n  base_model: org/model\n")
    result = runner.invoke(
        app,
        ["compile", "-o", str(tmp_path / "p.yaml"), "--config", str(conf), "--source", "."],
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "warning: source '.' is read from this machine's disk" in said
    assert "train.base_model 'org/model' is a Hugging Face Hub id" in said


def test_compiling_the_rollout_warns_of_no_training_setting(tmp_path: Path) -> None:
    """The rollout pipeline reads no data and trains nothing: a config made for training (its
    sources, its hub model) is no reason for a warning there."""
    conf = tmp_path / "c.yaml"
    conf.write_text("ingest:\n  sources: ['.']\ntrain:\n  base_model: org/model\n")
    result = runner.invoke(
        app, ["compile", "--pipeline", "rollout", "-o", str(tmp_path / "r.yaml"), "-c", str(conf)]
    )
    assert result.exit_code == 0, result.output
    assert "source" not in result.output and "base_model" not in result.output, result.output


@pytest.mark.parametrize("name", ["out.json", "folder.yaml"])
def test_compile_output_must_be_a_yaml_file(tmp_path: Path, name: str) -> None:
    """kfp's ValueError (.json, a folder) ended in a traceback."""
    (tmp_path / "folder.yaml").mkdir()
    result = runner.invoke(app, ["compile", "-o", str(tmp_path / name)])
    assert result.exit_code == 2 and "give a path ending in .yaml" in " ".join(
        result.output.replace("│", " ").split()
    )


def test_compile_without_the_manifests_warns_of_unpullable_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel install has no manifests/: the images fall back to aicrush-<rt>:latest."""
    monkeypatch.setattr("aicrush.images.KUSTOMIZATION", tmp_path / "missing.yaml")
    result = runner.invoke(app, ["compile", "-o", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    assert "which no cluster pulls" in " ".join(result.output.split())


def _distributed_config() -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "distributed.yaml"
    path.write_text("train:\n  distributed:\n    processes_per_node: 2\n")
    return path


def test_model_version_is_for_the_rollout_only() -> None:
    result = runner.invoke(app, ["submit", "--host", "http://127.0.0.1:9", "--model-version", "3"])
    said = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "--model-version applies to --pipeline rollout only" in said
    assert "tracking_uri" not in said  # refused before the config is read


@pytest.mark.parametrize("command", [["compile"], ["submit", "--host", "http://127.0.0.1:9"]])
def test_source_is_for_the_training_pipeline_only(command: list[str], tmp_path: Path) -> None:
    """The rollout pipeline reads no data: a --source there would be silently ignored."""
    out = ["-o", str(tmp_path / "r.yaml")] if command == ["compile"] else []
    result = runner.invoke(
        app, [*command, *out, "--pipeline", "rollout", "--source", "gs://bucket/code"]
    )
    assert result.exit_code == 2, result.output
    assert "--source applies to --pipeline training only" in " ".join(result.output.split())
    assert not (tmp_path / "r.yaml").exists()


def test_train_task_is_retried(tmp_path: Path) -> None:
    spec = _docs(compile_pipeline("training", tmp_path / "t.yaml"))[0]
    policy = spec["root"]["dag"]["tasks"]["train-model"]["retryPolicy"]
    assert policy["maxRetryCount"] == 2 and policy["backoffDuration"] == "30s"
    none = build_config({"resources": {"train_retries": 0}})
    spec = _docs(compile_pipeline("training", tmp_path / "n.yaml", none))[0]
    assert "retryPolicy" not in spec["root"]["dag"]["tasks"]["train-model"]
