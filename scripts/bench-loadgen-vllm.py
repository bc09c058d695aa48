#!/usr/bin/env python3
"""`vllm bench serve`, measuring the client's CPU time during the measured run only.

Used by scripts/bench-loadgen.sh so that both clients are charged the same thing: process CPU
(user + system) from the release of the first measured request to the end of the last, as
isobench's self-audit reports it; interpreter start-up, imports, dataset sampling and warm-up
are left out. Writes `{"cpu_s": ..., "wall_s": ...}` to $ISOBENCH_CPU_OUT.

    python bench-loadgen-vllm.py VLLM_CLI_PY bench serve --base-url ... (vllm's own flags)
"""
import json
import os
import resource
import runpy
import sys
import time


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def install_probes():
    import vllm.benchmarks.serve as serve

    marks = {}
    original_get_request = serve.get_request
    original_calculate_metrics = serve.calculate_metrics

    async def get_request(*args, **kwargs):
        # The first measured request is released right after this point.
        marks["cpu0"], marks["wall0"] = cpu_seconds(), time.perf_counter()
        async for item in original_get_request(*args, **kwargs):
            yield item

    def calculate_metrics(*args, **kwargs):
        # Called right after the last request finished (before any summary work).
        cpu, wall = cpu_seconds(), time.perf_counter()
        with open(os.environ["ISOBENCH_CPU_OUT"], "w") as out:
            json.dump({"cpu_s": cpu - marks["cpu0"], "wall_s": wall - marks["wall0"]}, out)
        return original_calculate_metrics(*args, **kwargs)

    serve.get_request = get_request
    serve.calculate_metrics = calculate_metrics


if __name__ == "__main__":
    cli = sys.argv[1]
    sys.argv = [cli] + sys.argv[2:]
    # vllm_cli.py aliases the package version lookup at import time; import it first, then probe.
    sys.path.insert(0, os.path.dirname(os.path.abspath(cli)))
    import vllm_cli  # noqa: F401  (side effect: version alias)

    install_probes()
    runpy.run_path(cli, run_name="__main__")
