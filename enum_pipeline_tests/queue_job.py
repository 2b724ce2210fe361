"""A small job for the run-queue test: it records when its run ran, in which process.

Loaded by a real code server (``test_run_queue.py``); each run writes one JSON file. No
``from __future__ import annotations``: Dagster checks the op's context annotation as a class.
"""

import json
import os
import time
from pathlib import Path

from dagster import Definitions, OpExecutionContext, in_process_executor, job, op


@op(config_schema={"folder": str, "seconds": float})
def record_run(context: OpExecutionContext) -> None:
    """Sleep, and write this run's tags, process and interval to ``folder/<run id>.json``."""
    start = time.time()
    time.sleep(context.op_config["seconds"])
    entry = {"tags": dict(context.run.tags), "pid": os.getpid(), "start": start, "end": time.time()}
    path = Path(context.op_config["folder"]) / f"{context.run_id}.json"
    path.write_text(json.dumps(entry))


@job(executor_def=in_process_executor)
def record_scope():
    record_run()


defs = Definitions(jobs=[record_scope])
