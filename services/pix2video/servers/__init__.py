"""gRPC services: transport only. Each converts protobuf <-> domain types and
calls a worker object given to its servicer's constructor (its ``worker.py``:
no gRPC; the torch code is the ``pix2video.engine`` library)."""
