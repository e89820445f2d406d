"""How fast `editgrpo --help` answers (heavy imports must stay lazy; target < 1 s).

Runs the console script N times in fresh processes and prints, as its last line, one JSON object:
{"help_median_s", "help_max_s", "runs", "import_torch_median_s"} -- the last is `python -c "import
torch"` measured in the same loop, to show what an eager import would cost on this machine."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main(runs: int = 7) -> dict[str, float]:
    exe = shutil.which("editgrpo", path=str(Path(sys.executable).parent))
    help_cmd = [exe, "--help"] if exe else [sys.executable, "-m", "editgrpo.cli", "--help"]
    torch_cmd = [sys.executable, "-c", "import torch"]
    _time(help_cmd)  # warm the file cache once
    help_times, torch_times = [], []
    for _ in range(runs):  # interleaved, so both see the same machine load
        help_times.append(_time(help_cmd))
        torch_times.append(_time(torch_cmd))
    figures = {
        "help_median_s": round(statistics.median(help_times), 3),
        "help_max_s": round(max(help_times), 3),
        "runs": runs,
        "import_torch_median_s": round(statistics.median(torch_times), 3),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
