"""Cohort throughput: N phantom cases one after another vs on a Dask LocalCluster. Not a test.

    python benchmarks/bench_cohort.py [--cases 8] [--workers 2] [--no-report] [--no-motion-correction]

The cases are demo-sized phantoms (64×64×16×60, MR with ADC and CT alternating, seeds 0…N-1)
written as NIfTI + sidecar. "Sequential" runs every case in one fresh Python process, one after
the other, through the same function the Dask workers run (``cohort.run_case_task``: read,
analyse, write); "Dask" runs ``run_cohort`` on a LocalCluster of ``--workers`` processes (one
thread each). Printed: wall time of each (cluster start-up apart), throughput (cases/min) and
its ratio, and the peak resident memory of the sequential process and of each worker.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_cases(folder: Path, n: int) -> Path:
    from StrokeMismatchLib import fileio
    from StrokeMismatchLib.phantom.volume import make_volume_phantom

    rows = []
    for index in range(n):
        modality = "mr" if index % 2 == 0 else "ct"
        phantom = make_volume_phantom(modality, seed=index)
        subject = f"sub-{index + 1:02d}"
        perfusion = folder / subject / f"{subject}_{'dsc' if modality == 'mr' else 'ctp'}.nii.gz"
        perfusion.parent.mkdir(parents=True)
        fileio.write_nifti_perfusion(perfusion, phantom.series)
        adc = ""
        if modality == "mr":
            adc = f"{subject}/{subject}_adc.nii.gz"
            fileio.write_volume(folder / adc, phantom.adc, phantom.adc_geometry)
        rows.append([subject, perfusion.relative_to(folder).as_posix(), adc, modality])
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "perfusion", "diffusion", "modality"])
        writer.writerows(rows)
    return manifest


def sequential_child(manifest: str, out: str, settings: str, report: bool) -> None:
    """Run in a fresh process: every case one after the other; print wall time and peak RSS."""
    from StrokeMismatchLib.cohort import read_manifest, run_case_task

    cases = read_manifest(manifest).cases
    started = time.perf_counter()
    outcomes = [run_case_task(case, out, json.loads(settings), {"report": report}) for case in cases]
    wall = time.perf_counter() - started
    print(json.dumps({"wall_s": wall, "statuses": [o["status"] for o in outcomes],
                      "case_s": [o["elapsed_s"] for o in outcomes],
                      "cpu_s": [o["cpu_s"] for o in outcomes],
                      "errors": sorted({o["error"] for o in outcomes if o["error"]}),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--no-motion-correction", action="store_true")
    parser.add_argument("--sequential-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sequential_child:
        manifest, out, settings, report = args.sequential_child
        sequential_child(manifest, out, settings, report == "1")
        return 0

    import distributed

    from StrokeMismatchLib.cohort import run_cohort

    settings = {"motion_correction": not args.no_motion_correction}
    report = not args.no_report
    folder = Path(tempfile.mkdtemp(prefix="bench-cohort-"))
    try:
        manifest = make_cases(folder / "data", args.cases)
        env = dict(os.environ, MPLBACKEND="Agg")
        child = subprocess.run([sys.executable, __file__, "--sequential-child", str(manifest), str(folder / "seq"),
                                json.dumps(settings), "1" if report else "0"], capture_output=True, text=True,
                               env=env, check=True)
        sequential = json.loads(child.stdout.strip().splitlines()[-1])

        os.environ["MPLBACKEND"] = "Agg"
        started = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                           dashboard_address=":0")
        client = distributed.Client(cluster)
        client.wait_for_workers(args.workers)
        startup = time.perf_counter() - started
        try:
            started = time.perf_counter()
            result = run_cohort(manifest, folder / "dask", client=client, settings=settings, report=report)
            wall = time.perf_counter() - started
            per_worker = {}
            for outcome in result.outcomes:
                if outcome.get("worker"):
                    per_worker[outcome["worker"]] = max(per_worker.get(outcome["worker"], 0.0),
                                                        outcome.get("peak_rss_mib") or 0.0)
        finally:
            client.close()
            cluster.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    n = args.cases
    print(f"{n} cases (64×64×16×60, MR/CT alternating), report {'on' if report else 'off'}, motion correction "
          f"{'on' if settings['motion_correction'] else 'off'}; {os.cpu_count()} CPU cores")
    print(f"sequential (1 process):      {sequential['wall_s']:6.1f} s  {60 * n / sequential['wall_s']:5.1f} cases/min"
          f"  peak RSS {sequential['peak_rss_mib']:.0f} MiB  statuses {sorted(set(sequential['statuses']))}")
    print(f"Dask LocalCluster {args.workers} workers: {wall:6.1f} s  {60 * n / wall:5.1f} cases/min"
          f"  (cluster start-up {startup:.1f} s apart)  statuses "
          f"{sorted({o['status'] for o in result.outcomes})}")
    dask_case_s = [o["elapsed_s"] for o in result.outcomes if o.get("elapsed_s") is not None]
    dask_cpu_s = [o["cpu_s"] for o in result.outcomes if o.get("cpu_s") is not None]
    print(f"mean wall time per case: sequential {sum(sequential['case_s']) / n:.1f} s, on a Dask worker "
          f"{sum(dask_case_s) / max(len(dask_case_s), 1):.1f} s; mean CPU time per case (all threads): "
          f"sequential {sum(sequential['cpu_s']) / n:.1f} s, Dask worker {sum(dask_cpu_s) / max(len(dask_cpu_s), 1):.1f} s")
    try:
        print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    except OSError:
        pass
    print(f"throughput ratio Dask/sequential: {sequential['wall_s'] / wall:.2f}"
          f" (with start-up: {sequential['wall_s'] / (wall + startup):.2f})")
    for error in sorted(set(sequential["errors"]) | {o["error"] for o in result.outcomes if o["error"]}):
        print(f"  FAILED case: {error}")
    for worker, peak in sorted(per_worker.items()):
        print(f"  worker {worker}: peak RSS {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
