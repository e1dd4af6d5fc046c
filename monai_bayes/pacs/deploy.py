"""MONAI Deploy App SDK operator and example app: Monte-Carlo inference → DICOM SEG + uncertainty maps.

Needs the ``deploy`` extra (``pip install 'monai-bayes[deploy]'``: ``monai-deploy-app-sdk``, which
brings the Holoscan SDK; it runs on CPU, no torchvision). The SDK's ``monai.deploy`` package must be
installed in the same environment as ``monai`` (it lives inside the ``monai`` package folder).

* :class:`MonaiBayesInferenceOperator` -- receives the SDK's ``study_selected_series_list`` (from
  :class:`~monai.deploy.operators.DICOMSeriesSelectorOperator`), runs
  :func:`~monai_bayes.pacs.pipeline.run_pipeline` on each selected series (the bundle loaded once)
  and emits the list of :class:`~monai_bayes.pacs.pipeline.PipelineResult` on ``results``: the
  result folders hold the DICOM Segmentation, the uncertainty Parametric Maps (total entropy,
  mutual information) and NIfTI files, with the same deterministic UIDs as ``monai-bayes pacs run``;
  with ``url`` set they are also delivered (DICOMweb or DIMSE, through the outbox).
* :class:`MonaiBayesDeployApp` -- DICOMDataLoaderOperator → DICOMSeriesSelectorOperator (CT) →
  the operator above: ``python -m monai_bayes.pacs.deploy --input DIR --output DIR --bundle PATH``.
* :func:`infer_selected_series` -- what the operator computes, usable without the SDK's scheduler.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.deploy.core import Application, ConditionType, Fragment, Operator, OperatorSpec

from monai_bayes.pacs.bundle import InferenceBundle, load_inference_bundle
from monai_bayes.pacs.pipeline import PipelineResult, run_pipeline
from monai_bayes.pacs.settings import DicomInferenceSettings

__all__ = ["CT_SELECTION_RULES", "MonaiBayesDeployApp", "MonaiBayesInferenceOperator", "infer_selected_series", "main"]

logger = logging.getLogger(__name__)

#: DICOMSeriesSelectorOperator rules: the first CT series of each study.
CT_SELECTION_RULES = json.dumps({"selections": [{"name": "CT series", "conditions": {"Modality": "(?i)CT"}}]})


def infer_selected_series(
    study_selected_series_list: Sequence[Any],
    bundle: InferenceBundle,
    *,
    output_dir: str | os.PathLike[str],
    settings: DicomInferenceSettings | None = None,
    url: str | None = None,
    outbox_dir: str | os.PathLike[str] | None = None,
) -> list[PipelineResult]:
    """Run the pipeline on every series selected by the SDK's series selector.

    Parameters
    ----------
    study_selected_series_list : sequence
        ``StudySelectedSeries`` objects (``.selected_series`` → ``.series.get_sop_instances()`` →
        ``.get_native_sop_instance()`` pydicom datasets).
    bundle : InferenceBundle
        The loaded bundle.
    output_dir : str or os.PathLike
        Result root (one folder per series and result fingerprint).
    settings : DicomInferenceSettings or None
        Pipeline settings (default: the bundle's).
    url : str or None
        Deliver the results there (DICOMweb or ``dicom://``); ``None`` keeps them local.
    outbox_dir : str or os.PathLike or None
        Outbox folder (default ``<output_dir>/outbox``).

    Returns
    -------
    list of PipelineResult
        One per selected series, in order.
    """
    outcomes = []
    for study in study_selected_series_list:
        for selected in study.selected_series:
            datasets = [inst.get_native_sop_instance() for inst in selected.series.get_sop_instances()]
            # the series as files, so it goes through the same reader and checks as `pacs run --input`
            with tempfile.TemporaryDirectory(prefix="monai_bayes_deploy_") as tmp:
                for k, ds in enumerate(datasets):
                    ds.save_as(Path(tmp) / f"{k:06d}.dcm", enforce_file_format=True)
                outcome = run_pipeline(
                    bundle,
                    input_dir=tmp,
                    output_dir=output_dir,
                    outbox_dir=outbox_dir,
                    settings=settings,
                    url=url,
                    push=url is not None,
                )
            logger.info(
                "series %s: %s, %d DICOM object(s) in %s",
                outcome.result.manifest["source"]["series_instance_uid"],
                outcome.status,
                len(outcome.result.instances),
                outcome.result.directory,
            )
            outcomes.append(outcome)
    return outcomes


class MonaiBayesInferenceOperator(Operator):
    """MONAI Deploy operator: selected DICOM series in → SEG + uncertainty Parametric Maps out.

    Input ``study_selected_series_list`` (from ``DICOMSeriesSelectorOperator``); output ``results``
    (list of :class:`~monai_bayes.pacs.pipeline.PipelineResult`; optional receiver).

    Parameters
    ----------
    fragment : Fragment
        The application.
    bundle : str or os.PathLike
        Bundle folder (``configs/inference.json``, ``models/model.pt`` ...); loaded once.
    output_folder : str or os.PathLike
        Result root.
    settings : DicomInferenceSettings or None
        Pipeline settings (default: the bundle's ``inference_dicom.json``).
    url : str or None
        Also deliver the results (DICOMweb or ``dicom://``).
    device : str or None
        Torch device (default: the bundle's).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        bundle: str | os.PathLike[str],
        output_folder: str | os.PathLike[str],
        settings: DicomInferenceSettings | None = None,
        url: str | None = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.bundle = load_inference_bundle(
            bundle,
            device=device,
            num_samples=settings.num_samples if settings else None,
            seed=settings.seed if settings else None,
        )
        self.output_folder = Path(output_folder)
        self.settings = settings
        self.url = url
        self.results: list[PipelineResult] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        """Declare the ports."""
        spec.input("study_selected_series_list")
        spec.output("results").condition(ConditionType.NONE)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        """Infer on the received series and emit the results."""
        selected = op_input.receive("study_selected_series_list")
        outcomes = infer_selected_series(
            selected or [], self.bundle, output_dir=self.output_folder, settings=self.settings, url=self.url
        )
        self.results.extend(outcomes)
        op_output.emit(outcomes, "results")


class MonaiBayesDeployApp(Application):
    """Example app: DICOM folder → CT series selection → MC inference → SEG + Parametric Maps.

    Set :attr:`input_folder`, :attr:`output_folder`, :attr:`bundle` (and optionally :attr:`url`,
    :attr:`device`) before :meth:`run`; the operator's results are in :attr:`results` afterwards.
    """

    input_folder: Path
    output_folder: Path
    bundle: Path
    url: str | None = None
    device: str | None = None

    def compose(self) -> None:
        """Wire loader → selector → inference (one pass over the input folder)."""
        from monai.deploy.conditions import CountCondition
        from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
        from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

        loader = DICOMDataLoaderOperator(
            self, CountCondition(self, 1), input_folder=Path(self.input_folder), name="dicom_loader"
        )
        selector = DICOMSeriesSelectorOperator(self, rules=CT_SELECTION_RULES, name="series_selector")
        self.inference = MonaiBayesInferenceOperator(
            self,
            bundle=self.bundle,
            output_folder=self.output_folder,
            url=self.url,
            device=self.device,
            name="monai_bayes_inference",
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, self.inference, {("study_selected_series_list", "study_selected_series_list")})

    @property
    def results(self) -> list[PipelineResult]:
        """The results of the last run."""
        return list(self.inference.results)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monai_bayes.pacs.deploy --input DIR --output DIR --bundle PATH [--url URL]``.

    Prints one JSON summary (result folders, SEG / Parametric Map files and UIDs) on stdout.

    Returns
    -------
    int
        0 when every selected series gave a result (and was delivered, with ``--url``), else 1.
    """
    parser = argparse.ArgumentParser(prog="python -m monai_bayes.pacs.deploy", description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="folder of DICOM files (searched recursively)")
    parser.add_argument("--output", required=True, type=Path, help="result root")
    parser.add_argument("--bundle", required=True, type=Path, help="bundle folder")
    parser.add_argument("--url", help="also deliver the results (DICOMweb root or dicom://AE@host:port)")
    parser.add_argument("--device", help="torch device (default: the bundle's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = MonaiBayesDeployApp()
    app.input_folder, app.output_folder, app.bundle = args.input, args.output, args.bundle
    app.url, app.device = args.url, args.device
    app.run()
    summary = [
        {
            "status": r.status,
            "result_dir": str(r.result.directory),
            "study_instance_uid": r.result.study_instance_uid,
            "instances": [
                {k: i.to_dict()[k] for k in ("kind", "file", "sop_instance_uid")} for i in r.result.instances
            ],
        }
        for r in app.results
    ]
    print(json.dumps({"results": summary}, indent=2))
    ok = bool(summary) and all(r.status in ("local", "delivered") for r in app.results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
