"""gRPC services: transport only. Each converts protobuf <-> domain types and
calls an engine object given to its servicer's constructor."""
