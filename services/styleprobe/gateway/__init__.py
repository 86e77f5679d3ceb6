"""The DICOM gateway (``styleprobe serve dicom-gateway``): DICOM in from a PACS, DICOM
results back into the study.

A C-STORE SCP with its own AE title (:mod:`.server`; DICOM TLS: :mod:`.dicom_tls`), and
optionally a STOW-RS endpoint (:mod:`.stow`), receive instances, grouped by series until
no new instance came for an inactivity timeout (:mod:`.series`). Routing
rules choose each image's model set (:mod:`.routing`). For each routed image the gateway
sends the orchestrator a de-identified copy (:mod:`.deidentify`) with an idempotency key
derived from the SOP Instance UID and the model set, waits for the job and reads its
artifacts (:mod:`.calls`), builds the results — the traversal and the difference maps as
multi-frame Secondary Capture, and a Comprehensive SR (TID 1500) — in the source's study,
with the patient put back from the source it kept (:mod:`.results`), and sends them to the
configured destination by C-STORE and/or STOW-RS (:mod:`.send`).
"""
