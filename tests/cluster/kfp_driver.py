"""Runs a compiled KFP IR pipeline the way a cluster does: each task in its own process, with
its own empty working directory and HOME, no shared state folder, exchanging only what the IR
declares (parameters and artifacts).

It reads the IR (``root.dag.tasks``, ``components``, ``deploymentSpec.executors``), builds each
task's ``executor_input`` as KFP's driver does, and runs the executor's own container command
(``sh -ec ... python3 -m kfp.dsl.executor_main``) with ``{{$}}`` replaced, in dependency order.
Outputs come back through the executor output file, as KFP's launcher reads them. It stands in
for the KFP backend only (Argo, driver, launcher); what runs inside each task is the compiled
component itself. Supported: parameter inputs from pipeline parameters, constants and upstream
task outputs; output parameters; output artifacts (local folders standing for the pod's
uploaded outputs); input artifacts from upstream tasks (``taskOutputArtifact``): what the
producer's executor declared, and only its own path, is copied into an artifact store after the
task ends, as the launcher uploads it, and a consumer reads that copy; ``env`` of the container
spec; nested DAGs and exit tasks (``dsl.ExitHandler``); the ``{{$.pipeline_job_uuid}}``
placeholder. Not supported (not used by the pipelines): conditions, loops, retry policies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TaskRun:
    name: str
    returncode: int
    outputs: dict[str, Any]
    artifacts: dict[str, dict[str, Any]]
    workdir: Path
    log: str
    seconds: float = 0.0  # wall time of the task's process


@dataclass
class PipelineRun:
    tasks: dict[str, TaskRun] = field(default_factory=dict)
    output: Any = None

    @property
    def failed(self) -> list[str]:
        return [name for name, t in self.tasks.items() if t.returncode != 0]

    def timings(self) -> str:
        """Each task's wall seconds, in run order (what ``pytest -s`` prints)."""
        return ", ".join(f"{name} {t.seconds:.1f} s" for name, t in self.tasks.items())


def load_ir(path: Path) -> tuple[dict, dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs[0], (docs[1] if len(docs) > 1 else {})


def _order(tasks: dict[str, dict]) -> list[str]:
    done: list[str] = []
    pending = dict(tasks)
    while pending:
        ready = [n for n, t in pending.items() if set(t.get("dependentTasks", [])) <= set(done)]
        if not ready:
            raise ValueError(f"cycle or missing dependency among {sorted(pending)}")
        for n in sorted(ready):
            done.append(n)
            pending.pop(n)
    return done


def _find_task(spec: dict, name: str) -> dict:
    """Task ``name`` of the root DAG or of a nested one (a group such as an exit handler's)."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        if name in dag["tasks"]:
            return dag["tasks"][name]
    raise KeyError(f"no task {name!r} in the IR")


def run_pipeline(
    ir_path: Path,
    arguments: dict[str, Any],
    root: Path,
    env: dict[str, str],
    home_files: dict[str, str] | None = None,
    timeout_s: float = 600.0,
    on_task_done: Callable[[str, TaskRun], None] | None = None,
    run_id: str | None = None,
    discard_pods: bool = False,
) -> PipelineRun:
    """Run every task of the IR at ``ir_path`` with pipeline ``arguments``.

    Args:
        root: where each task gets ``<task>/work`` (cwd), ``<task>/home`` (HOME) and
            ``<task>/outputs`` (its declared output artifacts), all empty at start; uploaded
            output artifacts go to ``<root>/artifact-store/<task>/<output>``.
        env: the whole environment of each task (nothing is inherited), plus the container
            spec's ``env``.
        home_files: files written into each task's HOME (relative path -> text), e.g. the
            kubeconfig standing for the pod's service account.
        on_task_done: called after each task (e.g. to inject a fault between two steps).
        run_id: the run's id (``{{$.pipeline_job_uuid}}``); a new uuid by default.
        discard_pods: delete each task's folders (all but ``log.txt``) once it is done, as a
            pod's disk goes with it: a later task that reads a path of an earlier one (through
            a parameter or an artifact's metadata) then fails, as it would in a cluster.
    A failed task stops its DAG (as KFP does); a task with the trigger policy
    ``ALL_UPSTREAM_TASKS_COMPLETED`` (a ``dsl.ExitHandler``'s exit task) runs all the same.
    Tasks of nested DAGs (the exit handler's group) are in ``run.tasks`` under their own names.
    """
    import uuid

    spec, _platform = load_ir(ir_path)
    params = spec["root"]["inputDefinitions"]["parameters"]
    pipeline_inputs = {k: v.get("defaultValue") for k, v in params.items()}
    unknown = set(arguments) - set(params)
    if unknown:
        raise ValueError(f"arguments {sorted(unknown)} are not pipeline parameters")
    pipeline_inputs.update(arguments)
    placeholders = {"{{$.pipeline_job_uuid}}": run_id or str(uuid.uuid4())}
    run = PipelineRun()

    def resolve(name: str, key: str, source: dict, inputs: dict[str, Any]) -> Any:
        if "componentInputParameter" in source:
            return inputs[source["componentInputParameter"]]
        if "taskOutputParameter" in source:
            ref = source["taskOutputParameter"]
            return run.tasks[ref["producerTask"]].outputs[ref["outputParameterKey"]]
        if "runtimeValue" in source:
            value = source["runtimeValue"]["constant"]
            return placeholders.get(value, value) if isinstance(value, str) else value
        raise ValueError(f"{name}.{key}: unsupported input {source}")

    def run_dag(dag: dict, inputs: dict[str, Any]) -> bool:
        """Runs ``dag``'s tasks in dependency order; True when every task succeeded."""
        tasks = dag["tasks"]
        ok = True
        for name in _order(tasks):
            task = tasks[name]
            exit_task = (task.get("triggerPolicy") or {}).get(
                "strategy"
            ) == "ALL_UPSTREAM_TASKS_COMPLETED"
            if not ok and not exit_task:
                continue
            values = {
                key: resolve(name, key, source, inputs)
                for key, source in (task.get("inputs", {}).get("parameters") or {}).items()
            }
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:  # a group (e.g. the exit handler's): its tasks, then on
                ok = run_dag(component["dag"], values) and ok
                continue
            artifacts = {}
            for key, source in (task.get("inputs", {}).get("artifacts") or {}).items():
                ref = source.get("taskOutputArtifact")
                if ref is None:
                    raise ValueError(f"{name}.{key}: unsupported artifact input {source}")
                artifacts[key] = run.tasks[ref["producerTask"]].artifacts[ref["outputArtifactKey"]]
            run.tasks[name] = run_task(name, component, values, artifacts)
            if on_task_done is not None:
                on_task_done(name, run.tasks[name])
            if discard_pods:
                for folder in ("work", "home", "tmp", "outputs"):
                    shutil.rmtree(root / name / folder, ignore_errors=True)
            ok = ok and run.tasks[name].returncode == 0
        return ok

    def run_task(
        name: str, component: dict, values: dict[str, Any], inputs: dict[str, dict[str, Any]]
    ) -> TaskRun:
        base = root / name
        started = time.monotonic()
        proc, output_file = start_task(
            spec, name, values, base, env, home_files, inputs, wait=True, timeout_s=timeout_s
        )
        outputs = base / "outputs"
        out_defs = component.get("outputDefinitions", {})
        produced: dict[str, Any] = {}
        artifacts: dict[str, dict[str, Any]] = {}
        if output_file.is_file():
            doc = json.loads(output_file.read_text())
            produced.update(doc.get("parameterValues", {}))
            declared = doc.get("artifacts", {})
            for k, definition in out_defs.get("artifacts", {}).items():
                artifact = {
                    "name": k,
                    "type": definition["artifactType"],
                    "uri": str(outputs / k),
                    "metadata": {},
                    **(declared[k]["artifacts"][0] if k in declared else {}),
                }
                artifacts[k] = upload(name, k, artifact)
        for k in out_defs.get("parameters", {}):
            pfile = outputs / f"param-{k}"
            if k not in produced and pfile.is_file():
                produced[k] = pfile.read_text()
        return TaskRun(
            name,
            proc.returncode,
            produced,
            artifacts,
            base / "work",
            (base / "log.txt").read_text(),
            time.monotonic() - started,
        )

    def upload(task: str, key: str, artifact: dict[str, Any]) -> dict[str, Any]:
        """What the launcher does with an output artifact: its own path (a file or a folder),
        nothing beside it, goes to the store; the consumer's runtime artifact points there."""
        local = Path(artifact["uri"])
        stored = root / "artifact-store" / task / key
        stored.parent.mkdir(parents=True, exist_ok=True)
        if local.is_dir():
            shutil.copytree(local, stored)
        elif local.is_file():
            shutil.copyfile(local, stored)
        return {**artifact, "uri": str(stored)}

    if not run_dag(spec["root"]["dag"], pipeline_inputs):
        return run
    out = (spec["root"]["dag"].get("outputs") or {}).get("parameters", {})
    if "Output" in out:
        ref = out["Output"]["valueFromParameter"]
        run.output = run.tasks[ref["producerSubtask"]].outputs.get(ref["outputParameterKey"])
    return run


def start_task(
    spec: dict,
    name: str,
    values: dict[str, Any],
    base: Path,
    env: dict[str, str],
    home_files: dict[str, str] | None = None,
    input_artifacts: dict[str, dict[str, Any]] | None = None,
    wait: bool = False,
    timeout_s: float = 600.0,
) -> tuple[subprocess.Popen, Path]:
    """Start task ``name`` of the IR ``spec`` as a new "pod": ``base/work`` (cwd), ``base/home``
    (HOME), ``base/outputs`` (its declared output artifacts), all new and empty; output in
    ``base/log.txt``. ``input_artifacts``: input name -> a runtime artifact (``uri``, ``type``).
    Returns the process (finished when ``wait``; its own process group, so
    ``os.killpg(proc.pid, SIGKILL)`` kills the whole "pod") and the executor output file."""
    task = _find_task(spec, name)
    component = spec["components"][task["componentRef"]["name"]]
    executor = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    work, home, outputs, tmp = base / "work", base / "home", base / "outputs", base / "tmp"
    for folder in (work, home, outputs, tmp):
        folder.mkdir(parents=True)
    for rel, text in (home_files or {}).items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text)
    out_defs = component.get("outputDefinitions", {})
    output_file = outputs / "executor_output.json"
    executor_input = {
        "inputs": {
            "parameterValues": values,
            "artifacts": {k: {"artifacts": [v]} for k, v in (input_artifacts or {}).items()},
        },
        "outputs": {
            "parameters": {
                k: {"outputFile": str(outputs / f"param-{k}")}
                for k in out_defs.get("parameters", {})
            },
            "artifacts": {
                k: {
                    "artifacts": [
                        {
                            "name": k,
                            "type": v["artifactType"],
                            # a local path, as the launcher maps gs:// to /gcs/
                            "uri": str(outputs / k),
                            "metadata": {},
                        }
                    ]
                }
                for k, v in out_defs.get("artifacts", {}).items()
            },
            "outputFile": str(output_file),
        },
    }
    command = [
        *executor.get("command", []),
        *[a.replace("{{$}}", json.dumps(executor_input)) for a in executor.get("args", [])],
    ]
    task_env = {
        **env,
        "HOME": str(home),
        "TMPDIR": str(tmp),
        **{e["name"]: e["value"] for e in executor.get("env", [])},
    }
    with open(base / "log.txt", "wb") as log:
        # Its own process group: killing the "pod" kills the shell and python3 under it.
        proc = subprocess.Popen(
            command,
            cwd=work,
            env=task_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if wait:
        proc.wait(timeout=timeout_s)
    return proc, output_file


def base_env(extra: dict[str, str]) -> dict[str, str]:
    """A minimal environment: PATH with this interpreter first (python3 in the command), the
    code on PYTHONPATH (the image's installed aicrush), and ``extra``."""
    import sys

    bindir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parents[2])),
        "LANG": "C.UTF-8",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env
