from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResizeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESIZE_MODE_UNSPECIFIED: _ClassVar[ResizeMode]
    RESIZE_MODE_CROP: _ClassVar[ResizeMode]
    RESIZE_MODE_PAD: _ClassVar[ResizeMode]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_DECODE: _ClassVar[Stage]
    STAGE_DEPTH: _ClassVar[Stage]
    STAGE_CAPTION: _ClassVar[Stage]
    STAGE_INVERSION: _ClassVar[Stage]
    STAGE_STORE: _ClassVar[Stage]
RESIZE_MODE_UNSPECIFIED: ResizeMode
RESIZE_MODE_CROP: ResizeMode
RESIZE_MODE_PAD: ResizeMode
STAGE_UNSPECIFIED: Stage
STAGE_DECODE: Stage
STAGE_DEPTH: Stage
STAGE_CAPTION: Stage
STAGE_INVERSION: Stage
STAGE_STORE: Stage

class InversionSettings(_message.Message):
    __slots__ = ("width", "height", "resize", "num_steps", "source_prompt", "max_frames")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    resize: ResizeMode
    num_steps: int
    source_prompt: str
    max_frames: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., resize: _Optional[_Union[ResizeMode, str]] = ..., num_steps: _Optional[int] = ..., source_prompt: _Optional[str] = ..., max_frames: _Optional[int] = ...) -> None: ...

class Upload(_message.Message):
    __slots__ = ("size_bytes", "filename")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    filename: str
    def __init__(self, size_bytes: _Optional[int] = ..., filename: _Optional[str] = ...) -> None: ...

class InvertStart(_message.Message):
    __slots__ = ("settings", "upload", "object_key")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    settings: InversionSettings
    upload: Upload
    object_key: str
    def __init__(self, settings: _Optional[_Union[InversionSettings, _Mapping]] = ..., upload: _Optional[_Union[Upload, _Mapping]] = ..., object_key: _Optional[str] = ...) -> None: ...

class InvertRequest(_message.Message):
    __slots__ = ("start", "chunk")
    START_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    start: InvertStart
    chunk: bytes
    def __init__(self, start: _Optional[_Union[InvertStart, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stage", "done", "total")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    done: int
    total: int
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class InvertResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: VideoInfo
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[VideoInfo, _Mapping]] = ...) -> None: ...

class GetVideoRequest(_message.Message):
    __slots__ = ("video_id",)
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    def __init__(self, video_id: _Optional[str] = ...) -> None: ...

class VideoInfo(_message.Message):
    __slots__ = ("video_id", "cached", "num_frames", "width", "height", "num_steps", "source_prompt", "fps")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    cached: bool
    num_frames: int
    width: int
    height: int
    num_steps: int
    source_prompt: str
    fps: float
    def __init__(self, video_id: _Optional[str] = ..., cached: _Optional[bool] = ..., num_frames: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_steps: _Optional[int] = ..., source_prompt: _Optional[str] = ..., fps: _Optional[float] = ...) -> None: ...
