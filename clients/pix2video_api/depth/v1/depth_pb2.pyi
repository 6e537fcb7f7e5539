from pix2video_api.common.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EstimateDepthRequest(_message.Message):
    __slots__ = ("frame", "output_width", "output_height")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    frame: _common_pb2.Image
    output_width: int
    output_height: int
    def __init__(self, frame: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., output_width: _Optional[int] = ..., output_height: _Optional[int] = ...) -> None: ...

class EstimateDepthResponse(_message.Message):
    __slots__ = ("index", "depth")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    index: int
    depth: _common_pb2.Tensor
    def __init__(self, index: _Optional[int] = ..., depth: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...
