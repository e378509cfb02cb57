"""``stroke-mismatch cohort`` / ``run_cohort`` on a real Dask cluster (issue 12).

Small phantom cases (6×40×40, no motion correction, no report) on a ``distributed.LocalCluster``
of two worker processes, and on a scheduler and workers started as separate ``dask scheduler``
/ ``dask worker`` processes on localhost TCP. Each cohort has a case that cannot be analysed
(a 3D image given as perfusion) and one whose file is missing: both are reported with their
reason and the others still run; every result equals the one ``stroke-mismatch analyze`` gives.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import distributed  # noqa: E402  (the test extra installs dask[distributed])

from StrokeMismatchLib import fileio  # noqa: E402
from StrokeMismatchLib.cli import main  # noqa: E402
from StrokeMismatchLib.cohort import CASE_MARKER, run_cohort  # noqa: E402
from StrokeMismatchLib.phantom.volume import make_volume_phantom  # noqa: E402

SHAPE = (6, 40, 40)
FAST = ["--no-motion-correction", "--no-report"]
GOOD = ("sub-mr1", "sub-ct2")


def write_case(folder: Path, subject: str, modality: str, seed: int) -> dict:
    phantom = make_volume_phantom(modality, shape=SHAPE, seed=seed)
    perfusion = folder / subject / f"{subject}_{'dsc' if modality == 'mr' else 'ctp'}.nii.gz"
    perfusion.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_nifti_perfusion(perfusion, phantom.series)
    paths = {"perfusion": perfusion, "diffusion": None}
    if modality == "mr":
        paths["diffusion"] = folder / subject / f"{subject}_adc.nii.gz"
        fileio.write_volume(paths["diffusion"], phantom.adc, phantom.adc_geometry)
    return paths


def write_manifest(folder: Path, rows) -> Path:
    path = folder / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "perfusion", "diffusion", "modality", "age", "nihss"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cohort_inputs(tmp_path_factory):
    """Two good cases (MR with ADC, CT), a 3D image as perfusion, a missing file; relative paths."""
    folder = tmp_path_factory.mktemp("cohort_inputs")
    mr = write_case(folder, "sub-mr1", "mr", 0)
    write_case(folder, "sub-ct2", "ct", 1)
    flat = folder / "sub-flat3" / "sub-flat3_dsc.nii.gz"
    flat.parent.mkdir()
    fileio.write_volume(flat, np.ones(SHAPE, np.float32), make_volume_phantom("mr", shape=SHAPE).series.geometry)
    manifest = write_manifest(folder, [
        ["sub-mr1", "sub-mr1/sub-mr1_dsc.nii.gz", "sub-mr1/sub-mr1_adc.nii.gz", "mr", "72", "14"],
        ["sub-ct2", "sub-ct2/sub-ct2_ctp.nii.gz", "", "ct", "", ""],
        ["sub-flat3", "sub-flat3/sub-flat3_dsc.nii.gz", "", "mr", "", ""],
        ["sub-gone4", "sub-gone4/nothing.nii.gz", "", "", "", ""],
    ])
    assert mr["diffusion"].is_file()
    return manifest


@pytest.fixture(scope="module")
def analyze_reference(cohort_inputs, tmp_path_factory):
    """summary.json and summary.csv of each good case run alone with ``stroke-mismatch analyze``."""
    out = tmp_path_factory.mktemp("analyze_reference")
    folder = cohort_inputs.parent
    reference = {}
    for subject, extra in (("sub-mr1", ["--diffusion", str(folder / "sub-mr1/sub-mr1_adc.nii.gz"), "--modality",
                                        "mr", "--age", "72", "--nihss", "14"]),
                           ("sub-ct2", ["--modality", "ct", "--nihss", "10"])):
        perfusion = folder / subject / f"{subject}_{'dsc' if subject == 'sub-mr1' else 'ctp'}.nii.gz"
        code = main(["analyze", "--perfusion", str(perfusion), "--out", str(out / subject), "--subject", subject,
                     "--quiet", "--tmax", "6.5", *FAST, *extra])
        assert code == 0
        reference[subject] = {"summary": json.loads((out / subject / "summary.json").read_text()),
                              "row": next(csv.DictReader((out / subject / "summary.csv").open()))}
    return reference


@pytest.fixture(scope="module")
def local_client():
    """A real LocalCluster: two worker processes, one thread each."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def read_rows(path: Path):
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def check_cohort_against_analyze(out: Path, reference: dict):
    header, rows = read_rows(out / "cohort.csv")
    assert header[0] == "subject" and header[-1] == "error"
    assert [row["subject"] for row in rows] == ["sub-mr1", "sub-ct2", "sub-flat3", "sub-gone4"]
    by_subject = {row["subject"]: row for row in rows}
    for subject in GOOD:
        expected = reference[subject]
        assert header[:-1] == list(expected["row"]), "cohort.csv columns must be those of summary.csv"
        row = dict(by_subject[subject])
        assert row.pop("error") == ""
        assert row == expected["row"], subject  # volumes, ratios, verdicts, settings: all identical
        summary = json.loads((out / subject / "summary.json").read_text())
        for key in ("core_ml", "hypoperfusion_ml", "penumbra_ml", "mismatch_ml", "mismatch_ratio"):
            assert summary[key] == expected["summary"][key], (subject, key)
        assert summary["criteria"] == expected["summary"]["criteria"]
        assert summary["settings"] == expected["summary"]["settings"]
    assert float(by_subject["sub-mr1"]["core_ml"]) > 0 and float(by_subject["sub-ct2"]["hypoperfusion_ml"]) > 0
    # per-case clinical values override the shared ones; the shared ones reach every other case
    assert by_subject["sub-mr1"]["setting_age"] == "72" and by_subject["sub-mr1"]["setting_nihss"] == "14"
    assert by_subject["sub-ct2"]["setting_age"] == "" and by_subject["sub-ct2"]["setting_nihss"] == "10"
    assert by_subject["sub-mr1"]["setting_tmax_threshold"] == "6.5"
    flat, gone = by_subject["sub-flat3"], by_subject["sub-gone4"]
    assert "3D" in flat["error"] and "4D" in flat["error"], flat["error"]
    assert "does not exist" in gone["error"] and "nothing.nii.gz" in gone["error"]
    assert flat["core_ml"] == "" and flat["modality"] == "mr"
    page = (out / "cohort.html").read_text()
    assert "sub-flat3" in page and "does not exist" in page and "DEFUSE 3" in page
    meta = json.loads((out / "cohort.json").read_text())
    assert meta["counts"] == {"total": 4, "finished": 4, "done": 2, "skipped": 0, "failed": 2}
    assert meta["shared_settings_given"]["tmax_threshold"] == 6.5 and meta["settings"]["motion_correction"] is False
    return by_subject


def test_local_cluster_cohort_rows_failures_and_same_results_as_analyze(cohort_inputs, analyze_reference,
                                                                       local_client, tmp_path):
    seen = []
    result = run_cohort(cohort_inputs, tmp_path / "out", client=local_client, report=False,
                        settings={"motion_correction": False, "tmax_threshold": 6.5, "nihss": 10},
                        progress=lambda outcome, counts: seen.append((outcome["subject"], counts["finished"])))
    check_cohort_against_analyze(tmp_path / "out", analyze_reference)
    assert sorted(s for s, _ in seen) == sorted(["sub-mr1", "sub-ct2", "sub-flat3", "sub-gone4"])
    assert [n for _, n in seen] == [1, 2, 3, 4]
    assert [o["status"] for o in result.outcomes] == ["done", "done", "failed", "failed"]
    # the cases ran in the cluster's worker processes, not here
    pids = {int(o["worker"].rsplit(":", 1)[1]) for o in result.outcomes if o["worker"]}
    assert os.getpid() not in pids
    assert pids <= set(local_client.run(os.getpid).values())
    marker = json.loads((tmp_path / "out" / "sub-flat3" / CASE_MARKER).read_text())
    assert marker["status"] == "failed" and "3D" in marker["error"]
    assert not (tmp_path / "out" / "sub-flat3" / "summary.json").exists()


def test_resume_skips_unchanged_and_reruns_changed_failed_and_incomplete(tmp_path, local_client):
    for subject, modality, seed in (("a1", "ct", 1), ("b2", "ct", 2), ("c3", "ct", 3)):
        write_case(tmp_path, subject, modality, seed)
    manifest = write_manifest(tmp_path, [[s, f"{s}/{s}_ctp.nii.gz", "", "ct", "", ""] for s in ("a1", "b2", "c3")]
                              + [["d4", "d4/missing_ctp.nii.gz", "", "ct", "", ""]])
    out = tmp_path / "out"
    options = dict(client=local_client, report=False, settings={"motion_correction": False})
    first = run_cohort(manifest, out, **options)
    assert [o["status"] for o in first.outcomes] == ["done", "done", "done", "failed"]
    stamps = {s: (out / s / "summary.json").stat().st_mtime_ns for s in ("a1", "b2", "c3")}

    # changed input content (same path), an incomplete result, the missing file now present
    time.sleep(0.01)
    write_case(tmp_path, "b2", "ct", 7)
    (out / "c3" / "maps" / "tmax.nii.gz").unlink()
    shutil.copytree(tmp_path / "a1", tmp_path / "d4")
    (tmp_path / "d4" / "a1_ctp.nii.gz").rename(tmp_path / "d4" / "missing_ctp.nii.gz")
    (tmp_path / "d4" / "a1_ctp.json").rename(tmp_path / "d4" / "missing_ctp.json")
    second = run_cohort(manifest, out, resume=True, **options)
    assert [o["status"] for o in second.outcomes] == ["skipped", "done", "done", "done"]
    assert (out / "a1" / "summary.json").stat().st_mtime_ns == stamps["a1"]
    assert (out / "b2" / "summary.json").stat().st_mtime_ns != stamps["b2"]
    assert (out / "c3" / "maps" / "tmax.nii.gz").is_file()
    _, rows = read_rows(out / "cohort.csv")
    assert [row["subject"] for row in rows] == ["a1", "b2", "c3", "d4"]
    assert all(row["error"] == "" and row["core_ml"] != "" for row in rows)  # the skipped row is complete too
    assert rows[0]["core_ml"] == rows[3]["core_ml"]  # d4 is a copy of a1

    # nothing changed: every case skipped; a changed setting reruns every case
    third = run_cohort(manifest, out, resume=True, **options)
    assert {o["status"] for o in third.outcomes} == {"skipped"}
    fourth = run_cohort(manifest, out, resume=True, client=local_client, report=False,
                        settings={"motion_correction": False, "tmax_threshold": 8.0})
    assert {o["status"] for o in fourth.outcomes} == {"done"}
    _, rows = read_rows(out / "cohort.csv")
    assert {row["setting_tmax_threshold"] for row in rows} == {"8.0"}


@pytest.fixture
def dask_processes(tmp_path):
    """A ``dask scheduler`` and a ``dask worker`` (two worker processes, one thread each) started as
    separate processes on localhost TCP with free ports; stopped afterwards."""
    dask_cli = Path(sys.executable).with_name("dask")
    assert dask_cli.is_file(), "the dask command comes with dask[distributed]"
    scheduler_file = tmp_path / "scheduler.json"
    started = []
    logs = open(tmp_path / "dask.log", "w")
    try:
        started.append(subprocess.Popen(
            [str(dask_cli), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)], stdout=logs, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        started.append(subprocess.Popen(
            [str(dask_cli), "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
             "--host", "127.0.0.1", "--local-directory", str(tmp_path / "dask-worker")],
            stdout=logs, stderr=subprocess.STDOUT))
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        if scheduler_file.is_file():
            try:  # a quick, orderly stop of the scheduler and its workers
                with distributed.Client(scheduler_file=str(scheduler_file), timeout="10s") as client:
                    client.shutdown()
            except (OSError, TimeoutError):
                pass
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()
        for process in reversed(started):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        logs.close()


def test_cli_on_separate_scheduler_and_worker_processes(cohort_inputs, analyze_reference, dask_processes,
                                                        tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["cohort", str(cohort_inputs), "--out", str(out), "--scheduler", dask_processes, "--quiet",
                 "--tmax", "6.5", "--nihss", "10", *FAST])
    captured = capsys.readouterr()
    assert code == 3, captured.err  # finished, some cases failed
    lines = captured.out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == ["sub-mr1", "sub-ct2", "sub-flat3", "sub-gone4"]
    assert "FAILED" in lines[2] and "FAILED" in lines[3] and "failed" not in lines[0].lower()
    assert lines[-1].startswith("cohort: 4 cases, 2 analysed, 0 unchanged, 2 failed")
    check_cohort_against_analyze(out, analyze_reference)
    assert "Dask scheduler tcp://127.0.0.1:" in json.loads((out / "cohort.json").read_text())["cluster"]

    # the same folder again: refused without --resume / --overwrite (exit 2, nothing changed) ...
    before = (out / "cohort.csv").read_bytes()
    code = main(["cohort", str(cohort_inputs), "--out", str(out), "--scheduler", dask_processes, "--quiet", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    assert (out / "cohort.csv").read_bytes() == before
    # ... and with --resume the two good cases are skipped, the two failed ones retried (and fail again)
    code = main(["cohort", str(cohort_inputs), "--out", str(out), "--scheduler", dask_processes, "--resume",
                 "--tmax", "6.5", "--nihss", "10", *FAST])
    captured = capsys.readouterr()
    assert code == 3
    assert "2 unchanged (resumed), 2 failed" in captured.out
    assert "[4/4]" in captured.err and "remaining" in captured.err  # progress on stderr
    assert "sub-gone4: perfusion sub-gone4/nothing.nii.gz" in captured.err  # what was found, listed first


def test_interrupted_cohort_writes_what_finished_and_marks_the_rest(tmp_path, local_client):
    for subject, seed in (("a1", 1), ("b2", 2), ("c3", 3)):
        write_case(tmp_path, subject, "ct", seed)
    manifest = write_manifest(tmp_path, [[s, f"{s}/{s}_ctp.nii.gz", "", "ct", "", ""] for s in ("a1", "b2", "c3")])

    def stop_after_first(outcome, counts):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cohort(manifest, tmp_path / "out", client=local_client, report=False,
                   settings={"motion_correction": False}, progress=stop_after_first)
    _, rows = read_rows(tmp_path / "out" / "cohort.csv")
    assert [row["subject"] for row in rows] == ["a1", "b2", "c3"]
    finished = [row for row in rows if row["error"] == ""]
    assert len(finished) == 1 and finished[0]["core_ml"] != ""
    assert sum("interrupted" in row["error"] and "--resume" in row["error"] for row in rows) == 2


def test_cli_starts_its_own_local_cluster_with_workers_and_memory_limit(tmp_path, capsys):
    write_case(tmp_path, "one", "ct", 4)
    manifest = write_manifest(tmp_path, [["one", "one/one_ctp.nii.gz", "", "ct", "", ""]])
    code = main(["cohort", str(manifest), "--out", str(tmp_path / "out"), "--workers", "1", "--memory-limit", "2GiB",
                 "--quiet", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("one: done; quality ")
    meta = json.loads((tmp_path / "out" / "cohort.json").read_text())
    assert meta["cluster"] == "local cluster: 1 worker(s), memory limit 2.0 GiB per worker"
    assert meta["counts"]["done"] == 1
    code = main(["cohort", str(manifest), "--out", str(tmp_path / "out2"), "--memory-limit", "lots", "--quiet"])
    assert code == 2 and "not a size" in capsys.readouterr().err
