#!/usr/bin/env python3
"""A loopback "cluster" for snakemake-executor-plugin-cluster-generic: submit.py JOBSCRIPT.

Starts the job script as its own detached process (a new session, no shared memory with Snakemake
or other jobs), the way a batch system would on another node, and records what the submission asked
for (rule, wildcards, threads, resources: read from the job script's `# properties` header) as one
JSON line in $LLM4REC_LOOPBACK_DIR/submissions.jsonl (default .snakemake/loopback/). Prints the job
id (the detached process's pid). Completion is signalled by the plugin's own marker files.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def job_properties(jobscript: Path) -> dict:
    for line in jobscript.read_text().splitlines():
        if line.startswith("# properties = "):
            return json.loads(line[len("# properties = "):])
    raise SystemExit(f"{jobscript}: no '# properties = ' line (not a Snakemake job script?)")


def main() -> None:
    jobscript = Path(sys.argv[-1]).resolve()
    props = job_properties(jobscript)
    folder = Path(os.environ.get("LLM4REC_LOOPBACK_DIR", ".snakemake/loopback")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{props['rule']}-{props['jobid']}"
    with open(folder / f"{name}.out", "ab") as out:
        process = subprocess.Popen(["/bin/bash", str(jobscript)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=os.getcwd())
    record = {"job": name, "rule": props["rule"], "wildcards": props.get("wildcards", {}),
              "threads": props.get("threads"), "resources": props.get("resources", {}), "pid": process.pid,
              "submitter_pid": os.getpid(), "submitted": time.time()}
    with open(folder / "submissions.jsonl", "a") as log:
        log.write(json.dumps(record, sort_keys=True) + "\n")
    print(process.pid)


if __name__ == "__main__":
    main()
