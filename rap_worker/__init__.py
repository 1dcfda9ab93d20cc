"""The RAP worker agent: enrolls, streams its assignments, resolves secrets just in
time and runs sessions. It never touches the database or imports rap_control."""

__version__ = "0.1.0"
