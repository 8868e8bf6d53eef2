"""Every jobs/*.py entry point, run with `--cfg job` in one process (heavy imports paid once): its
imports resolve and its Hydra config composes from the working dir it runs in. Submitted as a Ray
job by tests/e2e/test_job_submit.py, i.e. inside the uploaded working dir.

    python tests/e2e/check_jobs.py <paths.root>
"""

import contextlib
import io
import runpy
import sys
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra


def main(root: str) -> None:
    for path in sorted(Path("jobs").glob("*.py")):
        GlobalHydra.instance().clear()
        sys.argv = [str(path), "--cfg", "job", f"paths.root={root}"]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):  # as `python jobs/x.py --cfg job`: print, start nothing
            runpy.run_path(str(path), run_name="__main__")
        if f"root: {root}" not in printed.getvalue():
            raise SystemExit(f"{path}: composed config lacks paths.root={root}")
        print(f"ok {path.name}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
