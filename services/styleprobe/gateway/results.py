"""DICOM results of one explanation, in the source's study (IHE AI Results' shape).

- A Secondary Capture series (:func:`traversal_series`): the traversal as a multi-frame
  grey SC, one frame per λ (its Frame Label Vector names each frame's λ and marks the
  flip frame), and the signed difference maps as a multi-frame true-colour SC.
- A Comprehensive SR series (:func:`report_series`, TID 1500 through highdicom): the
  target's probability on the input and on its reconstruction, the flip λ, the direction's
  AUC, the reliability verdict with a coded reason per reason, the model set and the
  versions of its models.

Every object has the source's Study Instance UID, a new Series and SOP Instance UID
(derived from the job's id: results built again for the same job, e.g. for an instance
sent twice, replace themselves in the PACS instead of doubling), a reference to the
source instance, "NOT FOR DIAGNOSTIC USE" in its series description
and comments, and a Contributing Equipment item naming StyleProbe and the model versions.
The patient and study attributes are copied from the source the gateway kept: they were
never sent to the engine.
"""

from __future__ import annotations

import hashlib

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from styleprobe.api import pb

MANUFACTURER = "StyleProbe"
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
SCHEME = "99STYLEPROBE"  # the private coding scheme of the SR's concepts
SERIES_NUMBERS = {"traversal": 9901, "report": 9902}
MULTIFRAME_GREY_SC = UID("1.2.840.10008.5.1.4.1.1.7.2")
MULTIFRAME_COLOUR_SC = UID("1.2.840.10008.5.1.4.1.1.7.4")
FRAME_LABEL_VECTOR = 0x00182002
UNITLESS = hd.sr.CodedConcept("1", "UCUM", "no units")
PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                 "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                 "ReferringPhysicianName")


def concept(value: str, meaning: str) -> hd.sr.CodedConcept:
    """A concept of StyleProbe's private coding scheme."""
    return hd.sr.CodedConcept(value, SCHEME, meaning)


def model_versions(job: pb.Job) -> str:
    """The set's model versions, e.g. ``classifier=knee-oa-classifier/1; ...``."""
    return "; ".join(f"{kind}={version}"
                     for kind, version in sorted(job.explanation.models.items()))


def hashed_uid(text: str) -> UID:
    """A UID derived from ``text`` (the 2.25 root, 120 bits of its SHA-256)."""
    return UID(f"2.25.{int(hashlib.sha256(text.encode()).hexdigest()[:30], 16)}")


def device_uid(job: pb.Job) -> UID:
    """A UID of the model set in these versions: it changes when a model is retrained."""
    return hashed_uid(f"{job.model_set}|{model_versions(job)}")


def result_uid(job: pb.Job, role: str) -> UID:
    """The UID of one result object (or series) of a job: the same every time the job's
    results are built, so results sent again replace themselves in the PACS."""
    return hashed_uid(f"styleprobe-result|{job.job_id}|{role}")


def equipment(job: pb.Job) -> hd.ContributingEquipment:
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER, purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=f"StyleProbe {job.model_set}",
        software_versions=[model_versions(job)[:64]] if job.explanation.models else None,
        contribution_description=f"StyleProbe explanation, job {job.job_id}; "
                                 f"{NOT_FOR_DIAGNOSIS}")


def _patient_study(source: Dataset) -> dict[str, object]:
    """highdicom's patient and study arguments, from the source."""
    names = {"PatientName": "patient_name", "PatientID": "patient_id",
             "PatientBirthDate": "patient_birth_date", "PatientSex": "patient_sex",
             "AccessionNumber": "accession_number", "StudyID": "study_id",
             "StudyDate": "study_date", "StudyTime": "study_time",
             "ReferringPhysicianName": "referring_physician_name"}
    return {argument: source.get(keyword) or None for keyword, argument in names.items()}


def frame_labels(job: pb.Job) -> list[str]:
    """A label per frame: its λ (e.g. ``+1.000``), and FLIP on the frame nearest the
    flip λ."""
    lambdas = list(job.explanation.lambdas)
    flip = job.explanation.flip
    nearest = int(np.argmin([abs(x - flip.at_lambda) for x in lambdas])) if flip.found else -1
    return [f"{x:+.3f}{' FLIP' if i == nearest else ''}"[:16]  # SH: 16 characters
            for i, x in enumerate(lambdas)]


def _multiframe(source: Dataset, job: pb.Job, frames: list[np.ndarray], series_uid: UID,
                number: int, what: str, role: str) -> Dataset:
    """A multi-frame Secondary Capture of uint8 ``frames`` ((R, R) grey or (R, R, 3))."""
    stack = np.stack(frames).astype(np.uint8)
    colour = stack.ndim == 4
    image = hd.sc.SCImage(
        pixel_array=stack[0], photometric_interpretation="RGB" if colour else "MONOCHROME2",
        bits_allocated=8, coordinate_system="PATIENT",
        study_instance_uid=source.StudyInstanceUID, series_instance_uid=series_uid,
        series_number=SERIES_NUMBERS["traversal"], sop_instance_uid=result_uid(job, role),
        instance_number=number, manufacturer=MANUFACTURER, patient_orientation=("L", "F"),
        contributing_equipment=[equipment(job)], **_patient_study(source))  # type: ignore[arg-type]
    image.PatientOrientation = source.get("PatientOrientation", "")
    image.SOPClassUID = MULTIFRAME_COLOUR_SC if colour else MULTIFRAME_GREY_SC
    image.file_meta.MediaStorageSOPClassUID = image.SOPClassUID
    image.NumberOfFrames = len(stack)
    image.FrameIncrementPointer = FRAME_LABEL_VECTOR
    image.FrameLabelVector = frame_labels(job)
    image.BurnedInAnnotation = "NO"
    if not colour:
        image.PresentationLUTShape = "IDENTITY"
    image.PixelData = stack.tobytes()
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.SeriesDescription = f"StyleProbe traversal {job.model_set} - {NOT_FOR_DIAGNOSIS}"
    image.DerivationDescription = (
        f"StyleProbe {what} of the source image along the {job.target} direction of model "
        f"set {job.model_set} (job {job.job_id}); synthetic images, {NOT_FOR_DIAGNOSIS}")[:1024]
    image.ImageComments = f"{NOT_FOR_DIAGNOSIS}. {what}: one frame per lambda"
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    frames_used = source_frames(source, job)
    if frames_used:
        reference.ReferencedFrameNumber = frames_used[0]
    image.SourceImageSequence = [reference]
    return image


def source_frames(source: Dataset, job: pb.Job) -> list[int] | None:
    """The frame of a multi-frame source that was explained (1-based, as DICOM numbers
    frames); None for a single-frame source."""
    if int(source.get("NumberOfFrames", 1) or 1) <= 1:
        return None
    return [job.dicom.frame + 1]


def traversal_series(source: Dataset, job: pb.Job, frames: list[np.ndarray],
                     differences: list[np.ndarray]) -> list[Dataset]:
    """The traversal and the difference maps: one new SC series of two instances."""
    series_uid = result_uid(job, "traversal-series")
    return [_multiframe(source, job, frames, series_uid, 1, "latent traversal", "traversal"),
            _multiframe(source, job, differences, series_uid, 2,
                        "signed difference maps against the reconstruction", "differences")]


def _measurements(job: pb.Job) -> list[hd.sr.Measurement]:
    explanation = job.explanation
    target = job.target
    values = [
        (concept("SP001", f"Probability of {target} on the input"),
         explanation.prediction_input),
        (concept("SP002", f"Probability of {target} on the reconstruction"),
         explanation.prediction_reconstruction),
        (concept("SP003", "Latent predictor direction AUC"), explanation.direction.auc),
        (concept("SP004", "Reconstruction pixel MSE"), explanation.quality.pixel_mse),
    ]
    if explanation.flip.found:
        values.append((concept("SP005", "Flip lambda"), explanation.flip.at_lambda))
    return [hd.sr.Measurement(name=name, value=float(value), unit=UNITLESS)
            for name, value in values]


def _evaluations(job: pb.Job) -> list[hd.sr.QualitativeEvaluation]:
    quality = job.explanation.quality
    verdict = (concept("SP101", "Unreliable") if quality.unreliable
               else concept("SP100", "Reliable"))
    found = (concept("SP110", "Prediction flips within range") if job.explanation.flip.found
             else concept("SP111", "No flip within range"))
    evaluations = [
        hd.sr.QualitativeEvaluation(concept("SP010", "Explanation reliability"), verdict),
        hd.sr.QualitativeEvaluation(concept("SP011", "Counterfactual flip"), found)]
    for code in quality.reason_codes:
        name = pb.ReliabilityReason.Name(code).removeprefix("RELIABILITY_REASON_")
        evaluations.append(hd.sr.QualitativeEvaluation(
            concept("SP012", "Reliability reason"),
            concept(f"SP2{code:02d}", name.replace("_", " ").lower())))
    return evaluations


def report_series(source: Dataset, job: pb.Job) -> Dataset:
    """The Comprehensive SR (TID 1500 Measurement Report) of the explanation."""
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(job), name="StyleProbe", manufacturer_name=MANUFACTURER,
            model_name=job.model_set))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=result_uid(job, "tracking"),
            identifier=f"StyleProbe {job.model_set} {job.target}"),
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=f"StyleProbe {job.model_set}", version=model_versions(job)[:64] or "1"),
        measurements=_measurements(job), qualitative_evaluations=_evaluations(job),
        source_images=[hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
            referenced_frame_numbers=source_frames(source, job))])
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=concept("SP000", "StyleProbe counterfactual explanation"),
        imaging_measurements=[group])
    sr = hd.sr.ComprehensiveSR(
        evidence=[source], content=report, series_instance_uid=result_uid(job, "report-series"),
        series_number=SERIES_NUMBERS["report"], sop_instance_uid=result_uid(job, "report"),
        instance_number=1,
        manufacturer=MANUFACTURER, contributing_equipment=[equipment(job)],
        series_description=f"StyleProbe report {job.model_set} - {NOT_FOR_DIAGNOSIS}")
    return sr


def build_results(source: Dataset, job: pb.Job, frames: list[np.ndarray],
                  differences: list[np.ndarray]) -> list[Dataset]:
    """Every result object of one explained source instance."""
    return [*traversal_series(source, job, frames, differences), report_series(source, job)]
