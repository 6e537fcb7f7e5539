"""One edit as the SDK follows it across streams and replicas (sync and asyncio share it).

An edit is complete only when every frame 0..num_frames-1 arrived exactly
once, in order, and the server said ``done``. When a stream fails with
UNAVAILABLE the edit goes on: first by resuming the session where it is
(with its resume secret), and when that replica is gone, by opening it again
on the next editor address from the first frame not yet received
(``start_frame``): editing is deterministic, so the frames are the same.
Anything else, or running out of retries, raises a typed error; a stream that
ends early raises :class:`~pix2video_client.errors.IncompleteEdit`.
"""

from __future__ import annotations

import grpc

from pix2video_api.editor.v1 import editor_pb2

from .errors import IncompleteEdit, Pix2VideoClientError, from_rpc_error

# A resume that fails so: the session is not there any more; open it anew elsewhere.
_REOPEN_AFTER_RESUME = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


class EditProgress:
    """What an edit received so far, and what to ask for next.

    Args:
        open_msg: the edit's OpenSession (video, settings, output).
        addresses: how many editor addresses the client has (``address``
            indexes them; a reopen moves to the next).
        retries: attempts after a failure before giving up; frames arriving
            reset the count.
        backoff: seconds before the first retry, doubling each time.
    """

    def __init__(self, open_msg: editor_pb2.OpenSession, addresses: int, retries: int, backoff: float):
        self.open_msg = open_msg
        self.addresses, self.retries, self.backoff = max(addresses, 1), retries, backoff
        self.address = 0
        self.session_id: str | None = None
        self._secret = ""  # from `opened`; needed to resume, never shown
        self.num_frames: int | None = None
        self.received = 0
        self.attempt = 0
        self.resuming = False  # the next stream resumes (else it opens from `received`)
        self.opened_here = False  # the current stream answered `opened`
        self.done = False
        self.quality: editor_pb2.EditQuality | None = None  # from `done`, when the open asked to evaluate

    def request(self) -> editor_pb2.EditRequest:
        """The first request of the next stream."""
        self.opened_here = False
        if self.resuming:
            return editor_pb2.EditRequest(
                resume=editor_pb2.ResumeSession(
                    session_id=self.session_id,
                    next_frame=self.received,
                    output=self.open_msg.output,
                    resume_secret=self._secret,
                )
            )
        msg = editor_pb2.OpenSession()
        msg.CopyFrom(self.open_msg)
        msg.start_frame = self.received
        return editor_pb2.EditRequest(open=msg)

    def on_response(self, resp) -> editor_pb2.EditedFrame | None:
        """Checks one response; returns the frame to hand out, if it is one."""
        kind = resp.WhichOneof("kind")
        if kind == "opened":
            o = resp.opened
            if self.num_frames is not None and o.num_frames != self.num_frames:
                raise self._incomplete(
                    f"the editor reopened the edit with {o.num_frames} frames, not {self.num_frames}"
                )
            if o.next_frame != self.received:
                raise self._incomplete(f"the editor continues at frame {o.next_frame}, not {self.received}")
            self.session_id, self.num_frames, self.opened_here = o.session_id, o.num_frames, True
            if o.resume_secret:
                self._secret = o.resume_secret
            return None
        if kind == "frame":
            if resp.frame.index != self.received:
                raise self._incomplete(f"frame {resp.frame.index} arrived where frame {self.received} was due")
            self.received += 1
            self.attempt = 0
            return resp.frame
        if kind == "done":
            if self.received != self.num_frames:
                raise self._incomplete("the editor said done early")
            self.done = True
            if resp.done.HasField("quality"):
                self.quality = resp.done.quality
        return None

    def report_quality(self, on_quality) -> None:
        """Hands the edit's measured quality to ``on_quality`` (None when the
        server measured nothing: the edit was reopened from a later frame)."""
        from .types import EditQuality

        on_quality(EditQuality.from_proto(self.quality) if self.quality is not None else None)

    def on_end(self) -> None:
        """The stream ended; unless it said ``done`` the edit is incomplete."""
        if not self.done:
            raise self._incomplete("the stream ended without done")

    def on_error(self, exc: grpc.RpcError) -> float:
        """Decides how to go on after a failed stream: returns the seconds to
        wait before the next one, or raises the error the caller gets."""
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        if self.attempt >= self.retries:
            raise self._failure(exc)
        if self.resuming:
            if code not in _REOPEN_AFTER_RESUME:
                raise self._failure(exc)
            self.resuming = False  # the replica or the session is gone: open from here on the next replica
            self.address = (self.address + 1) % self.addresses
        elif code == grpc.StatusCode.UNAVAILABLE:
            if self.opened_here:
                self.resuming = True  # the stream broke: resume where the session is
            else:
                self.address = (self.address + 1) % self.addresses  # this replica cannot take it: the next one
        else:
            raise self._failure(exc)
        delay = self.backoff * 2**self.attempt
        self.attempt += 1
        return delay

    def _failure(self, exc: grpc.RpcError) -> Pix2VideoClientError:
        error = from_rpc_error(exc)
        if self.num_frames is None:  # nothing opened yet: the plain error
            return error
        return IncompleteEdit(error.code, f"{error.details} ({self._where()})", self.received, self.num_frames)

    def _incomplete(self, why: str) -> IncompleteEdit:
        return IncompleteEdit(grpc.StatusCode.DATA_LOSS, f"{why} ({self._where()})", self.received, self.num_frames)

    def _where(self) -> str:
        return f"edit stopped after {self.received} of {self.num_frames if self.num_frames is not None else '?'} frames"
