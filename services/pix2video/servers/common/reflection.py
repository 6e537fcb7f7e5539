"""Server reflection under both names: grpc.reflection.v1 and v1alpha.

grpcio-reflection serves only v1alpha; current tools (grpcurl, Postman,
grpc-health-probe's peers) ask for v1 first. The two protocols are the same
messages under another package, so v1 is served by the same servicer, and
v1's descriptor (v1alpha's, renamed) is added to the pool so that reflection
can describe itself under either name.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return
    except KeyError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(fdp)
    old = "." + fdp.package + "."
    fdp.name, fdp.package = "grpc/reflection/v1/reflection.proto", V1_PACKAGE
    new = "." + V1_PACKAGE + "."

    def rename(messages):
        for m in messages:
            for f in m.field:
                if f.type_name.startswith(old):
                    f.type_name = new + f.type_name[len(old) :]
            rename(m.nested_type)

    rename(fdp.message_type)
    for service in fdp.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    pool.Add(fdp)


def enable_reflection(service_names: list[str], server: grpc.aio.Server) -> None:
    """Reflection v1alpha and v1 for ``service_names`` (and for reflection itself)."""
    _add_v1_descriptor(descriptor_pool.Default())
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": handler}),)
    )
