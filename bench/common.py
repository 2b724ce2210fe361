"""Helpers the benchmark scripts share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading


def run_child(script: str, spec: dict, timeout: float) -> dict:
    """Run one case as ``script --child SPEC`` in a child process and return the JSON it prints
    last, with its peak RSS added (``ru_maxrss`` via ``os.wait4``)."""
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(script), "--child", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            out = proc.stdout.read()
        finally:
            timer.cancel()
            proc.stdout.close()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read()[-8000:])
            raise RuntimeError(
                f"case {spec.get('impl', spec.get('case'))} {spec.get('backend', '')} "
                f"{spec['size']} exited {proc.returncode}"
            )
    result = json.loads(out.strip().splitlines()[-1])
    result["maxrss_mib"] = usage.ru_maxrss / 1024
    return result
