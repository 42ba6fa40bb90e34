"""``python -m serving.monitor``: the drift monitor service (the monitor image's entry point)."""

from __future__ import annotations

import typer

from serving.monitor.cli import monitor_command


def main() -> None:
    typer.run(monitor_command)


if __name__ == "__main__":
    main()
