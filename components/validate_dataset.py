"""validate_dataset: clean the ingested files and split them by repository, with a data report.

Drops, each counted by reason: undecodable (not UTF-8) and binary (NUL byte) files, files outside
``[validate.min_bytes, validate.max_bytes]``, near-empty files (fewer than
``validate.min_nonblank_lines`` non-blank lines), files holding secrets (private keys, AWS, GitHub,
Slack and Google API keys; their paths are reported, their text never is) and exact duplicates by
sha256 (one deterministic copy is kept, the first by (repository, path), before splitting, so no
duplicate crosses splits). Classes above ``validate.max_files_per_class`` are down-sampled (seeded);
classes below ``validate.min_files_per_class`` are dropped or fail (``small_class_action``).

Splits train/val/test by repository: no repository is in two splits, except for classes that
cannot be split that way (seen in one repository only, or stuck in one split), which follow
``validate.single_repository_class_action`` and are reported. Every kept class is in train and test.
"""

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aicrush.config import ValidateConfig
from aicrush.errors import DataError

Progress = Callable[[str], None]
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Bump when the patterns change: validate re-scans files that an older ingest scanned.
SECRET_SCAN_VERSION = 1
# Each pattern starts with a literal, so re's prefix scan keeps a search near memory speed
# (one alternation of all of them has no common prefix and was 30x slower).
_SECRET_PATTERNS: tuple[str, ...] = (
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    r"AKIA[0-9A-Z]{16}(?![0-9A-Za-z])",
    r"ASIA[0-9A-Z]{16}(?![0-9A-Za-z])",
    r"AIza[0-9A-Za-z_\-]{35}",
    r"gh[pousr]_[A-Za-z0-9]{36}",
    r"github_pat_[A-Za-z0-9_]{22,}",
    r"xox[abposr]-[A-Za-z0-9-]{10,}",
)
_CHECKS_STR = tuple(re.compile(p) for p in _SECRET_PATTERNS)
_CHECKS_BYTES = tuple(re.compile(p.encode()) for p in _SECRET_PATTERNS)


def contains_secret(data: str | bytes) -> bool:
    """True when ``data`` holds a private key or a cloud/API token (never says which, or where).

    Private keys (``-----BEGIN ... PRIVATE KEY-----``), AWS access key ids (AKIA/ASIA...), Google
    API keys (AIza...), GitHub tokens (ghp_/gho_/ghu_/ghs_/ghr_, github_pat_), Slack tokens
    (xox?-). Generic ``password = '...'`` assignments are not flagged (too noisy in real code).
    """
    checks = _CHECKS_BYTES if isinstance(data, bytes) else _CHECKS_STR
    return any(pattern.search(data) is not None for pattern in checks)  # type: ignore[arg-type]


def _has_nonblank_lines(text: str, minimum: int) -> bool:
    if minimum <= 0:
        return True
    n = 0
    for line in text.splitlines():
        if line.strip():
            n += 1
            if n >= minimum:
                return True
    return False


def _rank(seed: int, repository: str, path: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{repository}\0{path}".encode(), digest_size=8).digest()


@dataclass
class ValidationReport:
    """Every count of one validation; ``report.json`` is ``asdict`` of it."""

    n_input: int
    n_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    ingest_skipped: dict[str, int] = field(default_factory=dict)
    secret_paths: list[str] = field(default_factory=list)
    downsampled: dict[str, int] = field(default_factory=dict)
    small_classes: dict[str, int] = field(default_factory=dict)
    single_repository_classes: list[str] = field(default_factory=list)
    file_split_classes: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)
    per_class_split: dict[str, dict[str, int]] = field(default_factory=dict)
    repositories_per_split: dict[str, int] = field(default_factory=dict)
    repositories_in_several_splits: list[str] = field(default_factory=list)
    input_content_hash: str = ""

    def to_metrics(self) -> dict[str, float]:
        """Flat numbers for the KFP Metrics artifact."""
        out = {
            "n_input": float(self.n_input),
            "n_kept": float(self.n_kept),
            "n_classes": float(len(self.classes)),
            "n_dropped": float(sum(self.dropped.values())),
            "n_single_repository_classes": float(len(self.single_repository_classes)),
            "n_file_split_classes": float(len(self.file_split_classes)),
        }
        for split in SPLITS:
            out[f"n_{split}"] = float(self.split_sizes.get(split, 0))
        for reason, n in self.dropped.items():
            out[f"dropped_{reason}"] = float(n)
        return out


# ----------------------------------------------------------------------------- cleaning


def _clean(
    files: pd.DataFrame, cfg: ValidateConfig, report: ValidationReport, scan_secrets: bool = True
) -> pd.DataFrame:
    dropped: Counter[str] = Counter()

    def drop(frame: pd.DataFrame, bad: pd.Series, reason: str) -> pd.DataFrame:
        n = int(bad.sum())
        if n:
            dropped[reason] += n
        return frame[~bad]

    frame = drop(files, files["text"].isna(), "undecodable")
    frame = drop(frame, frame["text"].str.contains("\x00", regex=False), "binary")
    size = frame["size"]
    frame = drop(frame, (size < cfg.min_bytes) | (size > cfg.max_bytes), "size_out_of_bounds")
    near_empty = ~frame["text"].map(
        lambda t: _has_nonblank_lines(t, cfg.min_nonblank_lines)
    ).astype(bool)
    frame = drop(frame, near_empty, "near_empty")
    if scan_secrets:  # an ingest that scanned with the same patterns already dropped them
        secret = frame["text"].map(contains_secret).astype(bool)
        report.secret_paths = sorted(
            {*report.secret_paths}
            | {
                f"{r}/{p}"
                for r, p in zip(
                    frame.loc[secret, "repository"], frame.loc[secret, "path"], strict=True
                )
            }
        )
        frame = drop(frame, secret, "secret")
    frame = frame.sort_values(["repository", "path"], kind="stable")
    frame = drop(frame, frame.duplicated("sha256", keep="first"), "duplicate")
    report.dropped = dict(dropped)
    return frame


def dropped_text(dropped: dict[str, int], cfg: ValidateConfig) -> str:
    """``near_empty: 5 (fewer non-blank lines than validate.min_nonblank_lines, 3), ...``: each
    reason with its count and the setting (or cause) behind it."""
    settings = {
        "size_out_of_bounds": f"outside validate.min_bytes {cfg.min_bytes} .. validate.max_bytes "
        f"{cfg.max_bytes}",
        "near_empty": f"fewer non-blank lines than validate.min_nonblank_lines, "
        f"{cfg.min_nonblank_lines}",
        "undecodable": "not UTF-8",
        "binary": "NUL bytes",
        "duplicate": "same content as a kept file",
        "small_class": f"classes under validate.min_files_per_class, {cfg.min_files_per_class}",
        "single_repository_class": "validate.single_repository_class_action is drop",
    }
    return ", ".join(
        f"{reason}: {n}" + (f" ({settings[reason]})" if reason in settings else "")
        for reason, n in sorted(dropped.items())
    )


def _downsample(frame: pd.DataFrame, cfg: ValidateConfig, report: ValidationReport) -> pd.DataFrame:
    counts = frame["language"].value_counts()
    big = counts[counts > cfg.max_files_per_class]
    if big.empty:
        return frame
    ranks = [_rank(cfg.seed, r, p) for r, p in zip(frame["repository"], frame["path"], strict=True)]
    frame = frame.assign(_rank=ranks).sort_values(["language", "_rank"], kind="stable")
    frame = frame[frame.groupby("language").cumcount() < cfg.max_files_per_class]
    report.downsampled = {
        str(k): int(v - cfg.max_files_per_class) for k, v in big.sort_index().items()
    }
    return frame.drop(columns="_rank").sort_values(["repository", "path"], kind="stable")


def _drop_small_classes(
    frame: pd.DataFrame, cfg: ValidateConfig, report: ValidationReport
) -> pd.DataFrame:
    counts = frame["language"].value_counts()
    small = counts[counts < cfg.min_files_per_class].sort_values()
    if small.empty:
        return frame
    names = ", ".join(str(k) for k in small.index)
    if cfg.small_class_action == "fail":
        raise DataError(
            f"dataset has {len(small)} classes with fewer than {cfg.min_files_per_class} files: "
            f"{names}; lower validate.min_files_per_class, set validate.small_class_action: drop, "
            "or add data"
        )
    report.small_classes = {str(k): int(v) for k, v in small.items()}
    report.dropped["small_class"] = int(small.sum())
    return frame[~frame["language"].isin(small.index)]


def _check_classes(frame: pd.DataFrame, cfg: ValidateConfig, report: ValidationReport) -> None:
    classes = sorted(frame["language"].unique())
    if len(classes) < cfg.min_classes:
        kept = ", ".join(classes) or "none"
        reasons = dropped_text(report.dropped, cfg) or "none"
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(report.ingest_skipped.items()))
        small = ", ".join(f"{k} {v}" for k, v in report.small_classes.items())
        need = (
            f" Languages with fewer than validate.min_files_per_class ({cfg.min_files_per_class}) "
            f"files were dropped ({small}): give at least {cfg.min_classes} languages "
            f"{cfg.min_files_per_class} files each, or lower validate.min_files_per_class (a run "
            f"needs {_least_files_for_all_splits(cfg)} or more per language to fill train, "
            "validation and test)."
            if small
            else ""
        )
        raise DataError(
            f"only {len(classes)} usable class(es) left ({kept}); validate.min_classes is "
            f"{cfg.min_classes}. Files dropped by reason: {reasons}."
            + (f" Left out at ingest (manifest.json): {skipped}." if skipped else "")
            + (
                need
                or " Add data with more languages (ingest.sources) or lower "
                "validate.min_files_per_class"
            )
        )


def _least_files_for_all_splits(cfg: ValidateConfig) -> int:
    """The fewest files of one language that a file split puts in train, validation and test."""
    for n in range(3, 1000):
        mapping = _file_split([("r", str(i)) for i in range(n)], cfg)
        if mapping is not None and set(mapping.values()) == set(SPLITS):
            return n
    return 1000


def _check_splits(frame: pd.DataFrame, cfg: ValidateConfig) -> None:
    """Every split must hold files: training needs a validation signal, evaluation a test set."""
    empty = [s for s in SPLITS if not (frame["split"] == s).any()]
    if not empty:
        return
    counts = frame["language"].value_counts()
    have = ", ".join(f"{k} {v}" for k, v in counts.items())
    least = _least_files_for_all_splits(cfg)
    raise DataError(
        f"the {' and '.join(empty)} split(s) would be empty: {len(frame)} usable files ({have}) "
        f"in {frame['repository'].nunique()} repositories are too few to hold files out. Give "
        f"each language at least {least} files (3 or more repositories per language split best; "
        f"{cfg.min_files_per_class} per language is validate.min_files_per_class), or raise "
        "validate.val_fraction / validate.test_fraction"
    )


# ----------------------------------------------------------------------------- splitting


def _file_split(
    paths: list[tuple[str, str]], cfg: ValidateConfig
) -> dict[tuple[str, str], str] | None:
    """Split one class's files (not repositories): seeded, at least one in train and test."""
    n = len(paths)
    if n < 2:
        return None
    ordered = sorted(paths, key=lambda rp: _rank(cfg.seed, *rp))
    n_test = max(1, round(n * cfg.test_fraction))
    n_val = min(round(n * cfg.val_fraction), n - n_test - 1)
    out = {}
    for i, rp in enumerate(ordered):
        out[rp] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def split_repositories(
    repo_counts: dict[str, Counter[str]], cfg: ValidateConfig
) -> tuple[dict[str, str], list[str]]:
    """Assign whole repositories to splits, stratified by class; returns (assignment, stuck classes).

    Greedy: the largest repositories first, each to the split whose per-class targets
    (``fraction x class total``) it fills best; then repositories are moved so that every class is
    in train and test where that is possible without taking a class out of a split it needs.
    """
    fractions = {
        "train": 1.0 - cfg.val_fraction - cfg.test_fraction,
        "val": cfg.val_fraction,
        "test": cfg.test_fraction,
    }
    totals: Counter[str] = Counter()
    for counts in repo_counts.values():
        totals.update(counts)
    current = {s: Counter[str]() for s in SPLITS}
    assign: dict[str, str] = {}
    order = sorted(
        repo_counts, key=lambda r: (-sum(repo_counts[r].values()), _rank(cfg.seed, r, ""))
    )
    for repo in order:
        counts = repo_counts[repo]

        def score(split: str, counts: Counter[str] = counts) -> float:
            return sum(
                n * (fractions[split] * totals[c] - current[split][c]) / totals[c]
                for c, n in counts.items()
            )

        best = max(("train", "test", "val"), key=score)  # ties: train, then test
        assign[repo] = best
        current[best].update(counts)

    repos_of: dict[str, list[str]] = defaultdict(list)
    for repo in sorted(repo_counts):
        for c in repo_counts[repo]:
            repos_of[c].append(repo)

    def presence(c: str, split: str) -> int:
        return sum(1 for r in repos_of[c] if assign[r] == split)

    def can_move(repo: str) -> bool:
        here = assign[repo]
        return here == "val" or all(presence(c, here) > 1 for c in repo_counts[repo])

    for _ in range(4):
        changed = False
        for c in sorted(repos_of):
            for need in ("train", "test"):
                if presence(c, need):
                    continue
                options = sorted(
                    (r for r in repos_of[c] if assign[r] != need),
                    key=lambda r: (assign[r] != "val", sum(repo_counts[r].values()), r),
                )
                for repo in options:
                    if can_move(repo):
                        assign[repo] = need
                        changed = True
                        break
        if not changed:
            break
    if len(assign) >= 3 and "val" not in assign.values():
        # An empty validation split would leave training without a held-out signal.
        movable = sorted(
            (r for r in assign if can_move(r)), key=lambda r: (sum(repo_counts[r].values()), r)
        )
        if movable:
            assign[movable[0]] = "val"
    stuck = sorted(c for c in repos_of if not presence(c, "train") or not presence(c, "test"))
    return assign, stuck


def _split(frame: pd.DataFrame, cfg: ValidateConfig, report: ValidationReport) -> pd.DataFrame:
    repos_per_class = frame.groupby("language")["repository"].nunique()
    single = sorted(str(c) for c in repos_per_class[repos_per_class < 2].index)
    report.single_repository_classes = single
    action = cfg.single_repository_class_action
    if single and action == "fail":
        raise DataError(
            f"{len(single)} class(es) occur in one repository only and cannot be split by "
            f"repository: {', '.join(single)}; set validate.single_repository_class_action to "
            "'split_files' or 'drop', or add repositories holding them"
        )
    by_repo = frame[~frame["language"].isin(single)]
    repo_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for (repo, lang), n in by_repo.groupby(["repository", "language"]).size().items():
        repo_counts[str(repo)][str(lang)] = int(n)
    assign, stuck = split_repositories(repo_counts, cfg) if repo_counts else ({}, [])
    if stuck and action == "fail":
        raise DataError(
            f"{len(stuck)} class(es) cannot be in both train and test when splitting by repository: "
            f"{', '.join(stuck)}; set validate.single_repository_class_action to 'split_files' or "
            "'drop', or add repositories holding them"
        )
    split = frame["repository"].map(assign)
    special = sorted({*single, *stuck})
    if special and action == "drop":
        n = int(frame["language"].isin(special).sum())
        report.dropped["single_repository_class"] = (
            report.dropped.get("single_repository_class", 0) + n
        )
        frame, split = (
            frame[~frame["language"].isin(special)],
            split[~frame["language"].isin(special)],
        )
    elif special:  # split_files
        file_split: list[str] = []
        unsplittable: list[str] = []
        for c in special:
            rows = frame["language"] == c
            keys = list(zip(frame.loc[rows, "repository"], frame.loc[rows, "path"], strict=True))
            mapping = _file_split(keys, cfg)
            if mapping is None:
                unsplittable.append(c)
                continue
            split[rows] = [mapping[k] for k in keys]
            file_split.append(c)
        report.file_split_classes = file_split
        if unsplittable:
            keep = ~frame["language"].isin(unsplittable)
            report.dropped["unsplittable_class"] = int((~keep).sum())
            frame, split = frame[keep], split[keep]
    return frame.assign(split=split.to_numpy())


# ----------------------------------------------------------------------------- report page


def _template(name: str) -> Any:
    """A template of ``components/templates/`` (package data), autoescaped."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("components", "templates"),
        autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name)


def _feature_sample(
    splits: dict[str, pd.DataFrame], cfg: ValidateConfig
) -> dict[str, pd.DataFrame]:
    from features.file_features import compute_file_features

    out = {}
    for name, frame in splits.items():
        if frame.empty:
            continue
        sample = frame.sample(n=min(cfg.report_sample_rows, len(frame)), random_state=cfg.seed)
        out[name] = compute_file_features(sample["text"].tolist())
    return out


def render_report_html(
    report: ValidationReport, splits: dict[str, pd.DataFrame], cfg: ValidateConfig
) -> str:
    """A readable data report: counts by reason, class x split table, feature summaries.

    Rendered from the Jinja2 template ``components/templates/data_report.html.j2`` (autoescaped);
    Evidently's data summary of the feature sample follows our tables when
    ``validate.report_evidently`` is on.
    """
    tables: list[tuple[str, list[str], list[list[Any]]]] = [
        (
            "Splits",
            ["split", "files", "repositories"],
            [
                [s, report.split_sizes.get(s, 0), report.repositories_per_split.get(s, 0)]
                for s in SPLITS
            ],
        ),
        (
            "Files per class and split",
            ["class", *SPLITS, "total"],
            [
                [
                    c,
                    *(report.per_class_split[c].get(s, 0) for s in SPLITS),
                    sum(report.per_class_split[c].values()),
                ]
                for c in report.classes
            ],
        ),
        (
            "Dropped files",
            ["reason", "files"],
            [[k, v] for k, v in sorted(report.dropped.items())] or [["none", 0]],
        ),
        (
            "Skipped at ingest",
            ["reason", "files"],
            [[k, v] for k, v in sorted(report.ingest_skipped.items())] or [["none", 0]],
        ),
        (
            "Class handling",
            ["what", "classes"],
            [
                [
                    "down-sampled (files removed)",
                    ", ".join(f"{k}: {v}" for k, v in report.downsampled.items()) or "-",
                ],
                [
                    "below min_files_per_class (dropped)",
                    ", ".join(f"{k}: {v}" for k, v in report.small_classes.items()) or "-",
                ],
                ["in one repository only", ", ".join(report.single_repository_classes) or "-"],
                [
                    f"split by file ({cfg.single_repository_class_action})",
                    ", ".join(report.file_split_classes) or "-",
                ],
                ["repositories in several splits", str(len(report.repositories_in_several_splits))],
            ],
        ),
        ("secrets", [], []),
    ]
    evidently_html = ""
    if cfg.report_sample_rows > 0:
        features = _feature_sample(splits, cfg)
        if features:
            names = list(next(iter(features.values())).columns)
            rows = [
                [
                    n,
                    *(
                        f"{features[s][n].mean():.4g} ± {features[s][n].std():.3g}"
                        if s in features
                        else "-"
                        for s in SPLITS
                    ),
                ]
                for n in names
            ]
            tables.append(
                (
                    f"Features per split (mean ± std over up to {cfg.report_sample_rows} files)",
                    ["feature", *SPLITS],
                    rows,
                )
            )
        if cfg.report_evidently and "train" in features and "test" in features:
            from evidently import Report
            from evidently.presets import DataSummaryPreset

            snapshot = Report([DataSummaryPreset()]).run(features["test"], features["train"])
            evidently_html = snapshot.get_html_str(as_iframe=False)
    page = _template("data_report.html.j2").render(report=report, tables=tables)
    if evidently_html:
        # Our tables first, then Evidently's own page body (test = current, train = reference).
        marker = "<body>"
        head, sep, tail = evidently_html.partition(marker)
        body = page.split("<body>", 1)[1].removesuffix("</body></html>")
        page = (
            head
            + sep
            + body
            + "<h2>Evidently: features of test (current) vs train (reference)</h2>"
            + tail
        )
    return page


# ----------------------------------------------------------------------------- the step


def validate(
    in_dir: Path, cfg: ValidateConfig, out_dir: Path, progress: Progress | None = None
) -> ValidationReport:
    """Clean ``in_dir/files.parquet`` and split it into ``out_dir`` (train/val/test + reports).

    Raises :class:`~aicrush.errors.DataError` naming the cause and the setting to change when
    the data is unusable (empty, too few classes, a class that cannot be split and must not be).
    """
    say = progress or (lambda _msg: None)
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    files_path = in_dir / "files.parquet"
    if not files_path.is_file():
        raise DataError(f"no files.parquet in {in_dir}: run ingest_sources first")
    files = pd.read_parquet(files_path)
    manifest_path = in_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    report = ValidationReport(
        n_input=len(files),
        ingest_skipped={str(k): int(v) for k, v in manifest.get("skipped", {}).items()},
        input_content_hash=str(manifest.get("content_hash", "")),
        secret_paths=[str(p) for p in manifest.get("secret_paths", [])],
    )
    if files.empty:
        raise DataError(f"the dataset in {in_dir} is empty: check ingest.sources")
    columns = list(files.columns)

    scanned = manifest.get("secret_scan_version") == SECRET_SCAN_VERSION
    frame = _clean(files, cfg, report, scan_secrets=not scanned)
    reasons = dropped_text(report.dropped, cfg)
    say(
        f"validate: {len(frame)} of {len(files)} files pass the checks ({reasons or 'none dropped'})"
    )
    if frame.empty:
        raise DataError(
            f"no usable file in {in_dir} ({reasons}): check ingest.sources, or validate.min_bytes, "
            "validate.max_bytes and validate.min_nonblank_lines"
        )
    frame = _downsample(frame, cfg, report)
    frame = _drop_small_classes(frame, cfg, report)
    if report.small_classes:
        small = ", ".join(f"{k} ({v})" for k, v in report.small_classes.items())
        say(
            f"validate: dropped {small}: fewer than validate.min_files_per_class "
            f"({cfg.min_files_per_class}) files; lower it or add files to keep them"
        )
    _check_classes(frame, cfg, report)
    frame = _split(frame, cfg, report)
    _check_classes(frame, cfg, report)
    _check_splits(frame, cfg)

    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {s: frame[frame["split"] == s][columns].reset_index(drop=True) for s in SPLITS}
    for name, part in splits.items():
        part.to_parquet(out_dir / f"{name}.parquet", index=False, compression="snappy")

    report.n_kept = len(frame)
    report.classes = sorted(str(c) for c in frame["language"].unique())
    report.split_sizes = {s: len(splits[s]) for s in SPLITS}
    table = frame.groupby(["language", "split"]).size()
    report.per_class_split = {
        c: {s: int(table.get((c, s), 0)) for s in SPLITS} for c in report.classes
    }
    report.repositories_per_split = {s: int(splits[s]["repository"].nunique()) for s in SPLITS}
    n_splits = frame.groupby("repository")["split"].nunique()
    report.repositories_in_several_splits = sorted(str(r) for r in n_splits[n_splits > 1].index)
    report.dropped = dict(sorted(report.dropped.items()))

    (out_dir / "report.json").write_text(json.dumps(asdict(report), indent=2))
    (out_dir / "report.html").write_text(render_report_html(report, splits, cfg), encoding="utf-8")
    say(
        f"validate: kept {report.n_kept} files in {len(report.classes)} classes; splits {report.split_sizes}"
    )
    return report


def run_validate_step(
    config: dict[str, Any], raw: Any, clean: Any, report: Any, metrics: Any
) -> None:
    """The body of the ``validate_dataset`` component: validate the config, validate the data."""
    from aicrush.config import config_from_dict
    from aicrush.progress import report as show_progress

    cfg = config_from_dict(config).validate_
    out_dir = Path(clean.path)
    result = validate(Path(raw.path), cfg, out_dir, progress=show_progress)
    Path(report.path).parent.mkdir(parents=True, exist_ok=True)
    Path(report.path).write_text(
        (out_dir / "report.html").read_text(encoding="utf-8"), encoding="utf-8"
    )
    for name, value in result.to_metrics().items():
        metrics.log_metric(name, value)
    clean.metadata["classes"] = result.classes
    clean.metadata["split_sizes"] = result.split_sizes
    clean.metadata["input_content_hash"] = result.input_content_hash


# ----------------------------------------------------------------------------- KFP component

from kfp.dsl import HTML, Dataset, Input, Metrics, Output  # noqa: E402

from components import pipeline_component  # noqa: E402


@pipeline_component
def validate_dataset(
    config: dict,
    raw: Input[Dataset],
    clean: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
):
    """Clean the ingested files and split them by repository; fail clearly on unusable data.

    Args:
        config: the whole aicrush config as a JSON dict; the ``validate`` section is used.
        raw: the ``ingest_sources`` dataset (``files.parquet`` + ``manifest.json``).
        clean: output folder: ``train.parquet``, ``val.parquet``, ``test.parquet`` (columns of
            files.parquet), ``report.json`` (every count) and ``report.html``.
        report: the HTML data report (counts by reason, class x split, feature summaries).
        metrics: kept/dropped counts, split sizes, number of classes.
    """
    from components.validate_dataset import run_validate_step

    run_validate_step(config, raw, clean, report, metrics)
