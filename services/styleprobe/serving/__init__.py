"""Serving model sets with NVIDIA Triton Inference Server.

:mod:`~styleprobe.serving.triton_config` writes the production ``config.pbtxt`` files
(``pytorch_libtorch`` on GPU) next to the exported TorchScript;
:mod:`~styleprobe.serving.cpu_repository` builds a CPU repository from the same files
(Python-backend models that run the TorchScript), and
:mod:`~styleprobe.serving.tritonserver` runs the ``tritonserver`` binary of the
``nvidia-pytriton`` wheel on it.
"""
