"""``monai-bayes pacs`` sub-commands: ``run``, ``flush-outbox``, ``outbox``, ``ping``, ``find``, ``listen``,
``template``.

Registered by :mod:`monai_bayes.cli` through :func:`register`. Heavy imports (torch, highdicom,
dicomweb-client) happen inside the handlers, so ``--help`` is fast and a missing ``pacs`` extra is
reported as such. Every handler returns the exit code of :mod:`monai_bayes.pacs.errors`; errors are
one line on stderr (the traceback only with ``-v``), results a JSON summary on stdout. Credentials
come from the environment or netrc (never from the command line).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["register"]

logger = logging.getLogger("monai_bayes.pacs")

ENV_URL = "MONAI_BAYES_PACS_URL"  # = monai_bayes.pacs.credentials.ENV_URL (not imported: --help stays light)
_EXTRAS = ("highdicom", "dicomweb_client", "requests", "pynetdicom")

_EPILOG = """\
credentials: MONAI_BAYES_PACS_USER + MONAI_BAYES_PACS_PASSWORD, or MONAI_BAYES_PACS_TOKEN (bearer),
             or a ~/.netrc 'machine <host>' entry; never on the command line or in the URL.
exit codes:  0 ok, 65 invalid input series (or corrupt outbox entry), 66 study/series/folder not found,
             69 PACS unreachable, 75 results saved but delivery pending in the outbox, 76 the PACS answered
             something that is not DICOMweb, 77 credentials refused, 78 bad bundle/settings/URL/output
             folder/TLS certificate, 1 internal error.
"""


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Map exceptions to exit codes and one-line messages."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        missing = [m for m in _EXTRAS if importlib.util.find_spec(m) is None]
        if missing:
            print(
                f"monai-bayes pacs: error: missing packages {missing}; "
                "install the extra: pip install 'monai-bayes[pacs]'",
                file=sys.stderr,
            )
            return 78
        from monai_bayes.pacs.errors import PacsError
        from monai_bayes.utils.errors import errors_reported_by_caller

        if not getattr(args, "verbose", False):  # pynetdicom logs every PDU at INFO
            logging.getLogger("pynetdicom").setLevel(logging.WARNING)

        try:
            with errors_reported_by_caller():  # our one line below, not the library's summary as well
                return handler(args)
        except PacsError as err:
            print(f"monai-bayes pacs: error: {err}", file=sys.stderr)
            logger.debug("details", exc_info=True)
            return err.exit_code
        except KeyboardInterrupt:
            print("monai-bayes pacs: interrupted; finished results are kept", file=sys.stderr)
            return 130
        except Exception as err:
            print(
                f"monai-bayes pacs: internal error: {type(err).__name__}: {err} (run with -v for the traceback)",
                file=sys.stderr,
            )
            logger.debug("traceback", exc_info=True)
            return 1

    return wrapped


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# ------------------------------------------------------------------------------------ settings
def _load_settings_file(path: str) -> dict[str, Any]:
    """A settings JSON: a bundle-style file with a ``pacs_settings`` block, or the block itself."""
    from monai_bayes.pacs.errors import PacsConfigError

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PacsConfigError(f"{p}: settings file not found") from None
    except json.JSONDecodeError as err:
        raise PacsConfigError(f"{p}: not valid JSON ({err})") from None
    block = data.get("pacs_settings", data) if isinstance(data, dict) else None
    if not isinstance(block, dict):
        raise PacsConfigError(f"{p}: expected a JSON object (or one with a 'pacs_settings' object)")
    exprs = [k for k, v in block.items() if isinstance(v, str) and v.startswith("$")]
    if exprs:
        raise PacsConfigError(f"{p}: expressions are not supported in --config files (keys {exprs})")
    return block


def _settings(args: argparse.Namespace, base: Any = None) -> Any:
    """Settings from ``--config`` (or ``base``) with the command-line overrides applied."""
    from monai_bayes.pacs.settings import DicomInferenceSettings

    if getattr(args, "config", None):
        settings = DicomInferenceSettings.from_dict(_load_settings_file(args.config))
    else:
        settings = base or DicomInferenceSettings()
    changes = {
        "num_samples": getattr(args, "num_samples", None),
        "seed": getattr(args, "seed", None),
        "threshold": getattr(args, "threshold", None),
        "segmentation_type": getattr(args, "segmentation_type", None),
        "mode": getattr(args, "mode", None),
        "slice_batch_size": getattr(args, "slice_batch_size", None),
        "max_attempts": getattr(args, "max_attempts", None),
        "backoff_s": getattr(args, "backoff", None),
        "read_timeout_s": getattr(args, "timeout", None),
        "modality": getattr(args, "modality", None),
        "ca_bundle": getattr(args, "ca_bundle", None),
        "max_volume_voxels": getattr(args, "max_volume_voxels", None),
        "ae_title": getattr(args, "ae_title", None),
        "dimse_retrieve": getattr(args, "retrieve", None),
        "move_port": getattr(args, "move_port", None),
        "tls_cert": getattr(args, "tls_cert", None),
        "tls_key": getattr(args, "tls_key", None),
    }
    if getattr(args, "allow_insecure_http", False):
        changes["allow_insecure_http"] = True
    if getattr(args, "no_nifti", False):
        changes["write_nifti"] = False
    return settings.replace(**changes)


def _output_dir(args: argparse.Namespace) -> Path:
    from monai_bayes.pacs.pipeline import default_output_dir

    return Path(args.output) if args.output else default_output_dir()


def _outbox_dir(args: argparse.Namespace) -> Path:
    return Path(args.outbox) if args.outbox else _output_dir(args) / "outbox"


# ------------------------------------------------------------------------------------ handlers
@_guard
def _cmd_run(args: argparse.Namespace) -> int:
    from monai_bayes.pacs.bundle import load_inference_bundle
    from monai_bayes.pacs.pipeline import check_run_arguments, run_pipeline

    url = args.url or os.environ.get(ENV_URL) or None
    # usage errors, bad UIDs and an unusable output location before the (slower) bundle load
    check_run_arguments(url, args.study, args.input, args.series, _output_dir(args), _outbox_dir(args))
    # CLI settings win over the bundle's inference_dicom.json, which wins over the defaults
    pre = _settings(args) if args.config else None
    t0 = time.perf_counter()
    bundle = load_inference_bundle(
        args.bundle,
        device=args.device,
        num_samples=args.num_samples if args.num_samples is not None else (pre.num_samples if pre else None),
        seed=args.seed if args.seed is not None else (pre.seed if pre else None),
    )
    settings = pre if pre is not None else _settings(args, bundle.settings)
    bundle_s = time.perf_counter() - t0
    outcome = run_pipeline(
        bundle,
        url=url,
        study_instance_uid=args.study,
        series_instance_uid=args.series,
        input_dir=args.input,
        output_dir=_output_dir(args),
        outbox_dir=_outbox_dir(args),
        settings=settings,
        push=not args.no_push,
        force=args.force,
        netrc_file=args.netrc,
    )
    r = outcome.result
    summary = {
        "status": outcome.status,
        "reused": outcome.reused,
        "result_dir": str(r.directory.resolve()),
        "fingerprint": r.fingerprint,
        "study_instance_uid": r.study_instance_uid,
        "source_series_instance_uid": r.manifest["source"]["series_instance_uid"],
        "instances": [
            {k: i.to_dict()[k] for k in ("kind", "map", "series_instance_uid", "sop_instance_uid", "file")}
            for i in r.instances
        ],
        "nifti": {k: str(v.resolve()) for k, v in r.nifti.items()},
        "outbox_entry": outcome.entry_id,
        "timings_s": {k: round(v, 2) for k, v in {"bundle": bundle_s, **outcome.timings_s}.items()},
    }
    _print_json(summary)
    if outcome.exit_code:
        err = outcome.flush.errors.get(outcome.entry_id or "") if outcome.flush else None
        reason = f" ({err})" if err else ""
        print(
            f"monai-bayes pacs: results saved in {r.directory} but not delivered{reason}; they are kept in the "
            f"outbox {_outbox_dir(args)} -- run 'monai-bayes pacs flush-outbox' when the PACS is back",
            file=sys.stderr,
        )
    return outcome.exit_code


@_guard
def _cmd_flush(args: argparse.Namespace) -> int:
    from monai_bayes.pacs.pipeline import flush_outbox

    outbox = _outbox_dir(args)
    url = args.url or os.environ.get(ENV_URL) or None
    report = flush_outbox(outbox, url=url, settings=_settings(args), netrc_file=args.netrc)
    _print_json(
        {
            "outbox": str(outbox),
            "sent": report.sent,
            "pending": report.pending,
            "errors": {k: str(v) for k, v in report.errors.items()},
            "other_destinations": report.other_destinations,
        }
    )
    for eid, err in report.errors.items():
        print(f"monai-bayes pacs: entry {eid} not delivered: {err}", file=sys.stderr)
    return report.exit_code


@_guard
def _cmd_outbox(args: argparse.Namespace) -> int:
    from monai_bayes.pacs.outbox import Outbox

    box = Outbox(_outbox_dir(args))
    found, corrupt = box.scan(args.url)
    entries = [{k: v for k, v in e.to_dict().items() if k != "format"} | {"directory": str(e.directory)} for e in found]
    _print_json(
        {
            "outbox": str(box.root),
            "pending": entries,
            "corrupt": {k: str(v) for k, v in corrupt.items()},
            "delivered": len(box.sent_entries()),
        }
    )
    for err in corrupt.values():
        print(f"monai-bayes pacs: {err}", file=sys.stderr)
    return max((e.exit_code for e in corrupt.values()), default=0)


def _url(args: argparse.Namespace) -> str:
    url = args.url or os.environ.get(ENV_URL)
    if not url:
        from monai_bayes.pacs.errors import PacsConfigError

        raise PacsConfigError(
            f"no PACS URL: pass --url (http(s)://.../dicom-web or dicom://AE@host:port) or set {ENV_URL}"
        )
    return str(url)


@_guard
def _cmd_ping(args: argparse.Namespace) -> int:
    from monai_bayes.pacs.transport import is_dimse_url, open_transport

    url = _url(args)
    settings = _settings(args)
    client = open_transport(url, settings, netrc_file=args.netrc)
    try:
        client.ping()
        if is_dimse_url(url):
            _print_json({"url": client.url, "ae_title": settings.ae_title, "c-echo": "ok"})
        else:
            _print_json({"url": client.url, "credentials": getattr(client, "credentials_source", None), "qido": "ok"})
    finally:
        client.close()
    return 0


@_guard
def _cmd_find(args: argparse.Namespace) -> int:
    from monai_bayes.pacs.dimse import DimseClient
    from monai_bayes.pacs.errors import PacsConfigError
    from monai_bayes.pacs.transport import is_dimse_url

    url = _url(args)
    if not is_dimse_url(url):
        raise PacsConfigError(f"pacs find speaks C-FIND: --url must be dicom://AE@host:port, got {url!r}")
    client = DimseClient.from_settings(url, _settings(args))
    studies = client.find_studies(study_instance_uid=args.study, patient_id=args.patient_id, study_date=args.study_date)
    out = []
    for st in studies:
        item: dict[str, Any] = dict(vars(st))
        if args.series:
            item["series"] = [dict(vars(s)) for s in client.search_series(st.study_instance_uid)]
        out.append(item)
    _print_json({"url": client.url, "studies": out})
    return 0 if out else 66


@_guard
def _cmd_listen(args: argparse.Namespace) -> int:
    from monai_bayes.pacs.bundle import load_inference_bundle
    from monai_bayes.pacs.dimse import server_ssl_context
    from monai_bayes.pacs.errors import PacsConfigError
    from monai_bayes.pacs.listener import Listener
    from monai_bayes.pacs.pipeline import check_output_dir
    from monai_bayes.pacs.transport import check_destination

    destination = args.destination or os.environ.get(ENV_URL)
    if not destination:
        raise PacsConfigError(
            f"no destination: pass --destination (DICOMweb root or dicom://AE@host:port) or set {ENV_URL}"
        )
    check_destination(destination)
    if (args.tls_server_cert is None) != (args.tls_server_key is None):
        raise PacsConfigError("--tls-server-cert and --tls-server-key go together")
    ssl_context = (
        server_ssl_context(args.tls_server_cert, args.tls_server_key, args.tls_client_ca)
        if args.tls_server_cert
        else None
    )
    spool = Path(args.spool) if args.spool else _output_dir(args) / "spool"
    check_output_dir(spool, "spool folder")
    pre = _settings(args) if args.config else None
    bundle = load_inference_bundle(
        args.bundle,
        device=args.device,
        num_samples=args.num_samples if args.num_samples is not None else (pre.num_samples if pre else None),
        seed=args.seed if args.seed is not None else (pre.seed if pre else None),
    )
    settings = pre if pre is not None else _settings(args, bundle.settings)
    node = Listener(
        bundle,
        ae_title=args.ae_title,
        port=args.port,
        bind=args.bind,
        spool=spool,
        destination=destination,
        allowed_ae_titles=args.allow,
        quiet_s=args.quiet,
        expected_instances=args.expected_instances,
        max_queue=args.max_queue,
        settings=settings,
        output_dir=_output_dir(args),
        outbox_dir=_outbox_dir(args),
        ssl_context=ssl_context,
        netrc_file=args.netrc,
    )
    node.serve_forever()
    return 0


@_guard
def _cmd_template(args: argparse.Namespace) -> int:
    from monai_bayes.pacs.settings import template_text

    sys.stdout.write(template_text())
    return 0


# ------------------------------------------------------------------------------------ parser
def _add_transport(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("delivery")
    g.add_argument("--netrc", metavar="FILE", help="netrc file for the credentials (default $NETRC or ~/.netrc)")
    g.add_argument("--max-attempts", type=int, metavar="N", help="tries per HTTP request (default 4)")
    g.add_argument("--backoff", type=float, metavar="SECONDS", help="first retry delay, doubled per retry (default 1)")
    g.add_argument("--timeout", type=float, metavar="SECONDS", help="HTTP read timeout (default 120)")
    g.add_argument(
        "--ca-bundle",
        metavar="PEM",
        help="CA certificates to trust for https (e.g. the hospital's internal CA; default $REQUESTS_CA_BUNDLE, "
        "$CURL_CA_BUNDLE, else certifi)",
    )
    g.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow credentials over plain http:// to a non-loopback host (refused by default)",
    )
    d = p.add_argument_group("DIMSE (dicom://AE@host:port URLs; dicoms:// for TLS)")
    if "--ae-title" not in p._option_string_actions:
        d.add_argument("--ae-title", metavar="AET", help="this node's (calling) AE title (default MONAI_BAYES)")
    d.add_argument("--retrieve", choices=("get", "move"), help="C-GET (default) or C-MOVE to --move-port")
    d.add_argument("--move-port", type=int, metavar="PORT", help="port receiving C-MOVE sub-operations")
    d.add_argument("--tls-cert", metavar="PEM", help="client certificate for mutual TLS (dicoms://)")
    d.add_argument("--tls-key", metavar="PEM", help="its private key")


def _add_dirs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output", metavar="DIR", help="output root (default $MONAI_BAYES_PACS_OUTPUT or ./monai_bayes_pacs)"
    )
    p.add_argument("--outbox", metavar="DIR", help="outbox folder (default <output>/outbox)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pacs`` command and its sub-commands to the top-level ``monai-bayes`` parser."""
    pacs = subparsers.add_parser(
        "pacs",
        help="DICOM / DICOMweb research pipeline (needs the 'pacs' extra)",
        description="DICOM in, DICOM SEG + uncertainty Parametric Maps out, DICOMweb (QIDO/WADO/STOW) round trip.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = pacs.add_subparsers(dest="pacs_command", metavar="SUBCOMMAND")
    pacs.set_defaults(func=lambda args: (pacs.print_help(), 2)[1])

    run = sub.add_parser(
        "run",
        help="infer on a series (folder or DICOMweb study), write SEG + Parametric Maps + NIfTI, push them",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = run.add_argument_group("input (a study on the PACS, or a folder)")
    src.add_argument("--url", help=f"DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web (default ${ENV_URL})")
    src.add_argument("--study", metavar="UID", help="StudyInstanceUID to read from --url")
    src.add_argument("--series", metavar="UID", help="SeriesInstanceUID (default: the study's only CT series)")
    src.add_argument("--input", metavar="DIR", help="read the series from this folder instead of the PACS")
    model = run.add_argument_group("model")
    model.add_argument(
        "--bundle",
        required=True,
        metavar="PATH",
        help="bundle folder (configs/inference.json ...) or an exported .onnx artefact (monai-bayes export)",
    )
    model.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: the bundle's)")
    model.add_argument("--num-samples", type=int, metavar="S", help="Monte-Carlo samples (default: the bundle's)")
    model.add_argument("--seed", type=int, help="seed of the MC noise (default: the bundle's, else 0)")
    model.add_argument("--mode", choices=("auto", "2d", "3d"), help="slice-wise or volumetric (default auto)")
    model.add_argument("--slice-batch-size", type=int, metavar="N", help="slices per forward pass in 2D mode")
    model.add_argument(
        "--max-volume-voxels",
        type=int,
        metavar="N",
        help="largest input volume accepted, Z*Y*X voxels (default 536870912 = 512*512*2048)",
    )
    out = run.add_argument_group("output")
    out.add_argument("--config", metavar="JSON", help="settings file (default: the bundle's inference_dicom.json)")
    out.add_argument("--threshold", type=float, help="foreground threshold on the mean probability (default 0.5)")
    out.add_argument("--segmentation-type", choices=("binary", "fractional"), help="SEG type (default binary)")
    out.add_argument("--modality", nargs="+", metavar="M", help="accepted input modalities (default CT)")
    out.add_argument("--no-nifti", action="store_true", help="do not write NIfTI files")
    out.add_argument("--no-push", action="store_true", help="write results locally only")
    out.add_argument("--force", action="store_true", help="recompute even if the same result exists")
    _add_dirs(out)
    _add_transport(run)
    run.set_defaults(func=_cmd_run)

    flush = sub.add_parser("flush-outbox", help="send the results kept in the outbox (exactly once per result)")
    _add_dirs(flush)
    flush.add_argument(
        "--url", help=f"the PACS to deliver to (default ${ENV_URL}); only entries queued for it are sent"
    )
    _add_transport(flush)
    flush.set_defaults(func=_cmd_flush)

    box = sub.add_parser("outbox", help="list the results waiting in the outbox")
    _add_dirs(box)
    box.add_argument("--url", help="only entries queued for this DICOMweb URL")
    box.set_defaults(func=_cmd_outbox)

    ping = sub.add_parser(
        "ping", help="check that the PACS answers: QIDO-RS with these credentials, or C-ECHO for dicom:// URLs"
    )
    ping.add_argument("--url", help=f"DICOMweb root or dicom://AE@host:port (default ${ENV_URL})")
    _add_transport(ping)
    ping.set_defaults(func=_cmd_ping)

    find = sub.add_parser("find", help="C-FIND studies (by study UID, or patient ID + study date) on a DIMSE peer")
    find.add_argument("--url", help=f"dicom://AE@host:port (default ${ENV_URL})")
    find.add_argument("--study", metavar="UID", help="StudyInstanceUID")
    find.add_argument("--patient-id", metavar="ID", help="PatientID (wildcards * ? allowed)")
    find.add_argument("--study-date", metavar="DATE", help="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    find.add_argument("--series", action="store_true", help="also list the series of each study (C-FIND SERIES)")
    _add_transport(find)
    find.set_defaults(func=_cmd_find)

    listen = sub.add_parser(
        "listen",
        help="receiving node: C-STORE SCP -> spool -> bundle inference -> results to --destination",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    node = listen.add_argument_group("node")
    node.add_argument("--ae-title", required=True, metavar="AET", help="this node's AE title (also calling AE)")
    node.add_argument("--port", required=True, type=int, help="TCP port to listen on")
    node.add_argument("--bind", default="", metavar="ADDR", help="address to listen on (default all interfaces)")
    node.add_argument("--allow", required=True, nargs="+", metavar="AET", help="calling AE titles allowed to send")
    node.add_argument("--spool", metavar="DIR", help="spool folder (default <output>/spool)")
    node.add_argument("--quiet", type=float, default=10.0, metavar="SECONDS", help="study complete after this quiet")
    node.add_argument("--expected-instances", type=int, metavar="N", help="study complete at N instances")
    node.add_argument("--max-queue", type=int, default=16, metavar="N", help="studies waiting before refusing new")
    node.add_argument("--tls-server-cert", metavar="PEM", help="TLS certificate of this node (with --tls-server-key)")
    node.add_argument("--tls-server-key", metavar="PEM", help="its private key")
    node.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates issued by these CAs")
    lmodel = listen.add_argument_group("model")
    lmodel.add_argument("--bundle", required=True, metavar="PATH", help="bundle folder or an exported .onnx artefact")
    lmodel.add_argument("--device", help="torch device (default: the bundle's)")
    lmodel.add_argument("--num-samples", type=int, metavar="S", help="Monte-Carlo samples (default: the bundle's)")
    lmodel.add_argument("--seed", type=int, help="seed of the MC noise")
    lmodel.add_argument("--config", metavar="JSON", help="settings file (default: the bundle's inference_dicom.json)")
    dest = listen.add_argument_group("results")
    dest.add_argument(
        "--destination", metavar="URL", help=f"DICOMweb root or dicom://AE@host:port (default ${ENV_URL})"
    )
    _add_dirs(dest)
    _add_transport(listen)
    listen.set_defaults(func=_cmd_listen)

    tpl = sub.add_parser("template", help="print the inference_dicom.json bundle-config template")
    tpl.set_defaults(func=_cmd_template)
