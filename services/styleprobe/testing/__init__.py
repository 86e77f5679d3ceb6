"""Test and benchmark harness: start the service's servers on free ports of this machine.

Production code never imports this package. One module per server role:
:mod:`.ports` (free ports), :mod:`.process` (a server program started and stopped by
process id), :mod:`.redis`, :mod:`.s3` (SeaweedFS's S3 gateway), :mod:`.triton`
(``tritonserver``) and :mod:`.stack` (the whole service: Redis, S3, orchestrator, workers).
"""
