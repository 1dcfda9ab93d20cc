"""The RAP Python SDK: a typed control-plane client, candidate choice, and the
data-plane connection (terminal, clipboard, upload)."""

from rap_client.client import RapClient, SessionHandle
from rap_client.connection import DataConnection, choose_candidate

__all__ = ["DataConnection", "RapClient", "SessionHandle", "choose_candidate"]
