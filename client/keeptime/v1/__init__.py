"""keeptime API v1: code generated from proto/keeptime/v1/keeptime.proto.

Do not edit the *_pb2* files; regenerate them with ``python tools/gen_proto.py``.
"""
