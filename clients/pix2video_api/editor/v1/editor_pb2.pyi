from pix2video_api.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reference(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFERENCE_UNSPECIFIED: _ClassVar[Reference]
    REFERENCE_ANCHOR_PREVIOUS: _ClassVar[Reference]
    REFERENCE_ANCHOR: _ClassVar[Reference]
    REFERENCE_PREVIOUS: _ClassVar[Reference]
    REFERENCE_ANCHOR_RANDOM: _ClassVar[Reference]

class InjectLayers(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INJECT_LAYERS_UNSPECIFIED: _ClassVar[InjectLayers]
    INJECT_LAYERS_DECODER: _ClassVar[InjectLayers]
    INJECT_LAYERS_ALL: _ClassVar[InjectLayers]
    INJECT_LAYERS_NONE: _ClassVar[InjectLayers]

class LatentUpdate(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LATENT_UPDATE_UNSPECIFIED: _ClassVar[LatentUpdate]
    LATENT_UPDATE_X0: _ClassVar[LatentUpdate]
    LATENT_UPDATE_XT: _ClassVar[LatentUpdate]
    LATENT_UPDATE_OFF: _ClassVar[LatentUpdate]
REFERENCE_UNSPECIFIED: Reference
REFERENCE_ANCHOR_PREVIOUS: Reference
REFERENCE_ANCHOR: Reference
REFERENCE_PREVIOUS: Reference
REFERENCE_ANCHOR_RANDOM: Reference
INJECT_LAYERS_UNSPECIFIED: InjectLayers
INJECT_LAYERS_DECODER: InjectLayers
INJECT_LAYERS_ALL: InjectLayers
INJECT_LAYERS_NONE: InjectLayers
LATENT_UPDATE_UNSPECIFIED: LatentUpdate
LATENT_UPDATE_X0: LatentUpdate
LATENT_UPDATE_XT: LatentUpdate
LATENT_UPDATE_OFF: LatentUpdate

class EditSettings(_message.Message):
    __slots__ = ("prompt", "negative_prompt", "guidance_scale", "num_steps", "seed", "reference", "inject_layers", "latent_update", "update_strength", "update_start", "update_end", "frames_in_flight")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    INJECT_LAYERS_FIELD_NUMBER: _ClassVar[int]
    LATENT_UPDATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    UPDATE_START_FIELD_NUMBER: _ClassVar[int]
    UPDATE_END_FIELD_NUMBER: _ClassVar[int]
    FRAMES_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    negative_prompt: str
    guidance_scale: float
    num_steps: int
    seed: int
    reference: Reference
    inject_layers: InjectLayers
    latent_update: LatentUpdate
    update_strength: float
    update_start: float
    update_end: float
    frames_in_flight: int
    def __init__(self, prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., guidance_scale: _Optional[float] = ..., num_steps: _Optional[int] = ..., seed: _Optional[int] = ..., reference: _Optional[_Union[Reference, str]] = ..., inject_layers: _Optional[_Union[InjectLayers, str]] = ..., latent_update: _Optional[_Union[LatentUpdate, str]] = ..., update_strength: _Optional[float] = ..., update_start: _Optional[float] = ..., update_end: _Optional[float] = ..., frames_in_flight: _Optional[int] = ...) -> None: ...

class OpenSession(_message.Message):
    __slots__ = ("video_id", "settings", "output", "start_frame", "evaluate")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    settings: EditSettings
    output: _common_pb2.OutputFormat
    start_frame: int
    evaluate: bool
    def __init__(self, video_id: _Optional[str] = ..., settings: _Optional[_Union[EditSettings, _Mapping]] = ..., output: _Optional[_Union[_common_pb2.OutputFormat, _Mapping]] = ..., start_frame: _Optional[int] = ..., evaluate: _Optional[bool] = ...) -> None: ...

class ResumeSession(_message.Message):
    __slots__ = ("session_id", "next_frame", "output", "resume_secret")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_FRAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESUME_SECRET_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    next_frame: int
    output: _common_pb2.OutputFormat
    resume_secret: str
    def __init__(self, session_id: _Optional[str] = ..., next_frame: _Optional[int] = ..., output: _Optional[_Union[_common_pb2.OutputFormat, _Mapping]] = ..., resume_secret: _Optional[str] = ...) -> None: ...

class CancelSession(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EditRequest(_message.Message):
    __slots__ = ("open", "resume", "cancel")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    open: OpenSession
    resume: ResumeSession
    cancel: CancelSession
    def __init__(self, open: _Optional[_Union[OpenSession, _Mapping]] = ..., resume: _Optional[_Union[ResumeSession, _Mapping]] = ..., cancel: _Optional[_Union[CancelSession, _Mapping]] = ...) -> None: ...

class SessionOpened(_message.Message):
    __slots__ = ("session_id", "num_frames", "next_frame", "resume_secret")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    NEXT_FRAME_FIELD_NUMBER: _ClassVar[int]
    RESUME_SECRET_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    num_frames: int
    next_frame: int
    resume_secret: str
    def __init__(self, session_id: _Optional[str] = ..., num_frames: _Optional[int] = ..., next_frame: _Optional[int] = ..., resume_secret: _Optional[str] = ...) -> None: ...

class EditedFrame(_message.Message):
    __slots__ = ("index", "image")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    image: _common_pb2.Image
    def __init__(self, index: _Optional[int] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ...) -> None: ...

class EditQuality(_message.Message):
    __slots__ = ("clip_text", "clip_image", "frames", "seconds")
    CLIP_TEXT_FIELD_NUMBER: _ClassVar[int]
    CLIP_IMAGE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    clip_text: float
    clip_image: float
    frames: int
    seconds: float
    def __init__(self, clip_text: _Optional[float] = ..., clip_image: _Optional[float] = ..., frames: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class SessionDone(_message.Message):
    __slots__ = ("num_frames", "quality")
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    num_frames: int
    quality: EditQuality
    def __init__(self, num_frames: _Optional[int] = ..., quality: _Optional[_Union[EditQuality, _Mapping]] = ...) -> None: ...

class EditResponse(_message.Message):
    __slots__ = ("opened", "frame", "done")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    opened: SessionOpened
    frame: EditedFrame
    done: SessionDone
    def __init__(self, opened: _Optional[_Union[SessionOpened, _Mapping]] = ..., frame: _Optional[_Union[EditedFrame, _Mapping]] = ..., done: _Optional[_Union[SessionDone, _Mapping]] = ...) -> None: ...
