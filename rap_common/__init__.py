"""Code shared by the control plane, the worker, the gateway and the SDK.

A leaf: it imports nothing of ours but the generated protobuf code.
"""
