"""DICOM networking against a real PACS (Orthanc, started by the fixture on free localhost ports):
``analyze --send`` puts the results into Orthanc; ``--stow`` posts them (to a local STOW-RS
recorder: the Debian Orthanc has no DICOMweb plugin); failures are reported and the files kept;
the ``listen`` node receives a series pushed from Orthanc, analyses it, sends the results back,
and keeps serving after hostile or broken senders."""

import json
import socket
import struct
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
from dicom_factory import write_classic_series
from orthanc_fixture import free_port, orthanc  # noqa: F401  (pytest fixture)

from StrokeMismatchLib import dicomnet
from StrokeMismatchLib.cli import main
from StrokeMismatchLib.errors import InputDataError
from StrokeMismatchLib.phantom.volume import make_volume_phantom

pynetdicom = pytest.importorskip("pynetdicom")
RESULT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG", "1.2.840.10008.5.1.4.1.1.30": "PM",
    "1.2.840.10008.5.1.4.1.1.7": "SC", "1.2.840.10008.5.1.4.1.1.88.34": "SR",
}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A small CT perfusion phantom as a classic DICOM series (6 slices × 60 frames)."""
    folder = tmp_path_factory.mktemp("net") / "src"
    phantom = make_volume_phantom("ct", seed=0, shape=(6, 40, 40))
    spacing = tuple(float(x) for x in phantom.series.geometry.spacing)
    paths = write_classic_series(folder, phantom.series.signal, phantom.series.times, modality="CT",
                                 spacing=spacing, intercept=-1024.0, description="CT perfusion")
    return folder, paths


def _wait(predicate, timeout_s=120.0, step=0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def _result_instances(server, study_uid):
    return [tags for tags in server.instances_tags()
            if tags.get("SOPClassUID") in RESULT_CLASSES and tags.get("StudyInstanceUID") == study_uid]


# --------------------------------------------------------------------------------------------
def test_parse_peer():
    assert dicomnet.parse_peer("PACS@10.0.0.5:104") == dicomnet.Peer("PACS", "10.0.0.5", 104)
    for bad in ("PACS@host", "@host:104", "PACS@host:0", "PACS@host:70000", "A" * 17 + "@h:104", "PACS host:1"):
        with pytest.raises(InputDataError, match="AET@HOST:PORT"):
            dicomnet.parse_peer(bad)


def test_analyze_send_puts_the_results_into_orthanc(orthanc, source, tmp_path, capsys):  # noqa: F811
    folder, paths = source
    orthanc.clear()
    code = main(["analyze", "--perfusion", str(folder), "--out", str(tmp_path / "out"), "--quiet", "--no-report",
                 "--no-motion-correction", "--dicom-out", str(tmp_path / "dicom"), "--send", orthanc.node])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"sent 7 DICOM object(s) to {orthanc.node}" in err
    study = pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
    stored = _result_instances(orthanc, study)
    local = {pydicom.dcmread(p).SOPInstanceUID for p in (tmp_path / "dicom").iterdir()}
    assert {tags["SOPInstanceUID"] for tags in stored} == local
    assert sorted(RESULT_CLASSES[t["SOPClassUID"]] for t in stored) == ["PM"] * 4 + ["SC", "SEG", "SR"]
    assert all("NOT FOR CLINICAL USE" in t["SeriesDescription"] for t in stored)


def test_send_failure_is_reported_and_files_are_kept(source, tmp_path, capsys):
    folder, _ = source
    closed = free_port()
    code = main(["analyze", "--perfusion", str(folder), "--out", str(tmp_path / "out"), "--quiet", "--no-report",
                 "--no-motion-correction", "--dicom-out", str(tmp_path / "dicom"), "--send", f"NOBODY@127.0.0.1:{closed}"])
    err = capsys.readouterr().err
    assert code == 3
    assert "sending to NOBODY@127.0.0.1" in err and "files are kept" in err
    assert len(list((tmp_path / "dicom").glob("*.dcm"))) == 7
    assert (tmp_path / "out" / "summary.json").exists()


class _StowRecorder(BaseHTTPRequestHandler):
    """A minimal STOW-RS endpoint that keeps each multipart/related request it receives."""

    protocol_version = "HTTP/1.1"
    received: list = []
    status = 200

    def do_POST(self):  # noqa: N802 - http.server API
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    break
                body += chunk
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/dicom+json")
        payload = b"{}"
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def _multipart_datasets(content_type, body):
    from email.parser import BytesParser
    from io import BytesIO

    message = BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    return [pydicom.dcmread(BytesIO(part.get_payload(decode=True))) for part in message.get_payload()]


def test_stow_posts_every_object_and_reports_a_refusal(source, tmp_path, capsys):
    folder, _ = source
    _StowRecorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StowRecorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/dicom-web"
        code = main(["analyze", "--perfusion", str(folder), "--out", str(tmp_path / "out"), "--quiet",
                     "--no-report", "--no-motion-correction", "--dicom-out", str(tmp_path / "dicom"), "--stow", url])
        assert code == 0, capsys.readouterr().err
        (path, content_type, body), = _StowRecorder.received
        assert path == "/dicom-web/studies" and content_type.startswith("multipart/related")
        posted = {ds.SOPInstanceUID for ds in _multipart_datasets(content_type, body)}
        assert posted == {pydicom.dcmread(p).SOPInstanceUID for p in (tmp_path / "dicom").iterdir()}
        _StowRecorder.status = 500
        report = dicomnet.send_stow(sorted((tmp_path / "dicom").iterdir()), url)
        assert not report.ok and "500" in report.message()
    finally:
        _StowRecorder.status = 200
        server.shutdown()


# --------------------------------------------------------------------------------------------
# The listen node
# --------------------------------------------------------------------------------------------
@pytest.fixture
def node(orthanc, tmp_path):  # noqa: F811
    """A ListenerNode sending to Orthanc, accepting Orthanc and the test's SCU, small limits."""
    port = free_port()
    config = dicomnet.ListenerConfig(
        out_dir=tmp_path / "node", ae_title="SMLISTEN", port=port, host="127.0.0.1",
        send_to=dicomnet.parse_peer(orthanc.node), allowed_ae_titles=("TESTSCU",), allowed_hosts=("127.0.0.1",),
        settle_s=1.5, max_instances=400, max_pending=2, timeout_s=10)
    listener = dicomnet.ListenerNode(config).start()
    yield listener
    listener.stop()


def _echo(port, calling="TESTSCU", called="SMLISTEN"):
    ae = pynetdicom.AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return status.Status


def _store(port, datasets, calling="TESTSCU"):
    from pydicom.uid import ExplicitVRLittleEndian

    ae = pynetdicom.AE(ae_title=calling)
    for uid in {str(ds.SOPClassUID) for ds in datasets}:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="SMLISTEN")
    assert assoc.is_established
    statuses = [assoc.send_c_store(ds).Status for ds in datasets]
    assoc.release()
    return statuses


def test_listen_node_analyses_a_series_pushed_from_orthanc_and_sends_results_back(orthanc, node, source):  # noqa: F811
    folder, paths = source
    orthanc.clear()
    orthanc.upload(paths)
    study_uid = pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
    orthanc.rest("PUT", "/modalities/strokemismatch",
                 {"AET": "SMLISTEN", "Host": "127.0.0.1", "Port": node.config.port})
    (series_id,) = orthanc.rest("GET", "/series")
    orthanc.rest("POST", "/modalities/strokemismatch/store", {"Resources": [series_id], "Synchronous": True})
    case = _wait(lambda: [e for e in node.log_entries() if e.get("event") == "case"], timeout_s=180)
    assert case, node.log_entries()
    (entry,) = case
    assert entry["status"] == "analysed", entry
    assert entry["instances"] == len(paths) and entry["calling_ae"] == orthanc.ae_title
    assert entry["sent"] == 7 and set(entry["verdicts"]) >= {"DEFUSE3", "EXTEND_IA"}
    stored = _wait(lambda: len(_result_instances(orthanc, study_uid)) == 7 and _result_instances(orthanc, study_uid))
    assert sorted(RESULT_CLASSES[t["SOPClassUID"]] for t in stored) == ["PM"] * 4 + ["SC", "SEG", "SR"]
    case_dir = node.cases / entry["case"]
    assert (case_dir / "results" / "summary.json").exists() and len(list((case_dir / "dicom").glob("*.dcm"))) == 7
    assert not any(node.incoming.iterdir())  # the received series is removed after its analysis
    summary = json.loads((case_dir / "results" / "summary.json").read_text())
    assert entry["core_ml"] == summary["core_ml"]


def test_listen_node_survives_hostile_and_broken_senders(node, source, tmp_path):
    port = node.config.port
    assert _echo(port) == 0x0000
    # 1. garbage PDU
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x42\x00" + struct.pack(">I", 12) + b"not a pdu at")
        time.sleep(0.3)
    assert _echo(port) == 0x0000
    # 2. truncated association: an A-ASSOCIATE-RQ header announcing 2000 bytes, then hang up
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x01\x00" + struct.pack(">I", 2000) + b"\x00\x01\x00\x00SMLISTEN")
    assert _echo(port) == 0x0000
    # 3. an AE title that is not on the allow-list is rejected, so is an address not on it
    assert _echo(port, calling="STRANGER") is None
    ae = pynetdicom.AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="SMLISTEN", bind_address=("127.0.0.2", 0))
    assert not assoc.is_established
    assert any(e.get("reason") == "address not allowed" and e.get("address") == "127.0.0.2"
               for e in node.log_entries())
    # 4. a dataset that is not an image (no pixels, no series UID) and one with a hostile UID
    text = pydicom.Dataset()
    text.SOPClassUID, text.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", pydicom.uid.generate_uid()
    text.Modality = "CT"
    text.file_meta = pydicom.dataset.FileMetaDataset()
    text.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    hostile = pydicom.dcmread(source[1][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UI value: that is the point
        hostile.SeriesInstanceUID = "../../../../tmp/evil"
    statuses = _store(port, [text, hostile])
    assert all(status != 0x0000 for status in statuses)
    assert not list(node.incoming.iterdir())
    assert _echo(port) == 0x0000
    reasons = [e.get("reason", "") for e in node.log_entries() if e.get("event") == "refused instance"]
    assert any("UID" in r for r in reasons) and len(reasons) >= 2
    assert not (Path("/tmp/evil").exists())


def test_listen_node_refuses_an_over_limit_series(node, source):
    folder, paths = source
    # the node takes at most 400 instances per series: send 401 (the 360 files, then 41 of them
    # again under new SOP instance UIDs)
    over = [pydicom.dcmread(p) for p in paths]
    for ds in [pydicom.dcmread(p) for p in paths[:41]]:
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        over.append(ds)
    statuses = _store(node.config.port, over[:401])
    assert statuses[:400] == [0x0000] * 400 and statuses[400] == 0xA700
    refused = _wait(lambda: [e for e in node.log_entries() if e.get("event") == "refused series"], 10)
    assert refused and "more than 400 instances" in refused[0]["reason"]
    time.sleep(node.config.settle_s + 1.0)
    assert not any(node.incoming.iterdir())  # its files were deleted
    assert not [e for e in node.log_entries() if e.get("event") == "case"]  # and it was not analysed
    assert _echo(node.config.port) == 0x0000


def test_listen_command_refuses_bad_options(tmp_path, capsys):
    base = ["listen", "--port", "11112", "--ae-title", "SMNODE", "--out", str(tmp_path / "n")]
    assert main(base + ["--send", "PACS-no-port"]) == 2
    assert "AET@HOST:PORT" in capsys.readouterr().err
    assert main(base + ["--send", "PACS@127.0.0.1:104", "--settle", "9999"]) == 2
    assert "--settle" in capsys.readouterr().err
    assert main(["listen", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--max-instances" in out and "--allow" in out and "--tmax" in out


def test_late_instances_are_refused_and_logged_and_a_resend_is_a_new_case(source, tmp_path):
    """Completion = no instance for settle_s; an instance arriving during the analysis is refused
    (logged once, the sender sees 0xA700); the same series sent after its analysis is a new case."""
    _, paths = source
    release = threading.Event()
    seen = []

    def analyse(folder, case_dir, entry):  # stands in for the analysis, holds it until released
        seen.append(len(list(Path(folder).glob("*.dcm"))))
        release.wait(30)
        return []

    port = free_port()
    listener = dicomnet.ListenerNode(dicomnet.ListenerConfig(
        out_dir=tmp_path / "node", ae_title="SMLISTEN", port=port, host="127.0.0.1",
        allowed_ae_titles=("TESTSCU",), allowed_hosts=("127.0.0.1",), settle_s=0.5, analyse=analyse)).start()
    try:
        datasets = [pydicom.dcmread(p) for p in paths[:12]]
        assert _store(port, datasets[:10]) == [0x0000] * 10
        assert _wait(lambda: seen, timeout_s=10) == [10]
        assert _store(port, datasets[10:12]) == [0xA700, 0xA700]
        late = [e for e in listener.log_entries() if e.get("event") == "late instance"]
        assert len(late) == 1 and "--settle" in late[0]["reason"]
        release.set()
        assert _wait(lambda: [e for e in listener.log_entries() if e.get("event") == "case"], timeout_s=10)
        assert _store(port, datasets[:3]) == [0x0000] * 3  # sent again: a new case
        assert _wait(lambda: len(seen) == 2, timeout_s=10) and seen[1] == 3
    finally:
        release.set()
        listener.stop()
    cases = [e for e in listener.log_entries() if e.get("event") == "case"]
    assert [c["status"] for c in cases] == ["analysed", "analysed"] and cases[0]["case"] != cases[1]["case"]


def test_a_broken_series_is_a_logged_refusal_and_the_node_keeps_serving(node, source):
    """Seven files of a 6-slice series (slices with different numbers of time points): the analysis
    refuses it with the reader's reason, nothing is sent, the node answers the next association."""
    _, paths = source
    assert _store(node.config.port, [pydicom.dcmread(p) for p in paths[:7]]) == [0x0000] * 7
    cases = _wait(lambda: [e for e in node.log_entries() if e.get("event") == "case"], timeout_s=60)
    assert cases and cases[0]["status"] == "refused", cases
    assert cases[0]["reason"] and "sent" not in cases[0]
    assert _echo(node.config.port) == 0x0000
