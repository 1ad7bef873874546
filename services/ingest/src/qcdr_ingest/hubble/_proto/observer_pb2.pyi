import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from qcdr_ingest.hubble._proto import flow_pb2 as _flow_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetFlowsRequest(_message.Message):
    __slots__ = ("number", "first", "follow", "blacklist", "whitelist", "since", "until")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    BLACKLIST_FIELD_NUMBER: _ClassVar[int]
    WHITELIST_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    number: int
    first: bool
    follow: bool
    blacklist: _containers.RepeatedCompositeFieldContainer[_flow_pb2.FlowFilter]
    whitelist: _containers.RepeatedCompositeFieldContainer[_flow_pb2.FlowFilter]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, number: _Optional[int] = ..., first: _Optional[bool] = ..., follow: _Optional[bool] = ..., blacklist: _Optional[_Iterable[_Union[_flow_pb2.FlowFilter, _Mapping]]] = ..., whitelist: _Optional[_Iterable[_Union[_flow_pb2.FlowFilter, _Mapping]]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetFlowsResponse(_message.Message):
    __slots__ = ("flow", "lost_events", "node_name", "time")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    LOST_EVENTS_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    flow: _flow_pb2.Flow
    lost_events: _flow_pb2.LostEvent
    node_name: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, flow: _Optional[_Union[_flow_pb2.Flow, _Mapping]] = ..., lost_events: _Optional[_Union[_flow_pb2.LostEvent, _Mapping]] = ..., node_name: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
