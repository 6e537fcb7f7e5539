"""The depth service: DPT depth maps for streams of frames, batched across calls.

``server.py`` (gRPC only) converts messages and hands frames to ``worker.py``
(torch only) through a :class:`~pix2video.servers.common.batcher.DynamicBatcher`.
Run it with ``python -m pix2video.servers.depth --help``.
"""
