"""The data-plane frame codec, shared by the worker, the gateway and the SDK.

Each WebSocket binary message is one ``rap.v1.DataPlaneFrame``. Close codes
of the data plane are here too, so every side names them alike.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from rap.v1 import dataplane_pb2
from rap_common.errors import InvalidArgument

SUBPROTOCOL = "rap.v1"
# A client that cannot set headers sends its token as a second subprotocol.
TOKEN_SUBPROTOCOL_PREFIX = "rap.bearer."  # noqa: S105 - a protocol name, not a secret
MAX_FRAME = 1 << 20

# Close codes (4xxx: application). A refused bind closes with the code of its
# error class (rap_common.errors): 4401 token, 4403 not allowed, 4404 unknown
# session, 4412 session not live.
CLOSE_SUPERSEDED = 4410  # another attachment took the session over
CLOSE_DETACHED = 4411  # the attachment was detached
CLOSE_SESSION_ENDED = 4412  # the session ended while the client was bound


def encode(frame: dataplane_pb2.DataPlaneFrame) -> bytes:
    return frame.SerializeToString()


def decode(data: bytes) -> dataplane_pb2.DataPlaneFrame:
    if len(data) > MAX_FRAME:
        raise InvalidArgument("frame too large", reason="frame_too_large")
    frame = dataplane_pb2.DataPlaneFrame()
    try:
        frame.ParseFromString(data)
    except DecodeError:
        raise InvalidArgument("not a DataPlaneFrame", reason="bad_frame") from None
    return frame


def terminal(data: bytes) -> bytes:
    return encode(dataplane_pb2.DataPlaneFrame(terminal_data=dataplane_pb2.TerminalData(data=data)))


def control(kind: int, reason: str = "", message: str = "") -> bytes:
    return encode(
        dataplane_pb2.DataPlaneFrame(
            control=dataplane_pb2.ControlMessage(kind=kind, reason=reason, message=message)  # type: ignore[arg-type]
        )
    )
