"""The caption service: BLIP captions of images, batched across calls.

``server.py`` (gRPC only) converts messages and hands images to ``worker.py``
(torch only) through a :class:`~pix2video.servers.common.batcher.DynamicBatcher`.
Run it with ``python -m pix2video.servers.caption --help``.
"""
