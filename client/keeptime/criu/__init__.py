"""keeptime's side of CRIU: the action script (``keeptime criu-hook``) and
what it needs without keeptimed.

    timens_pb2   generated from proto/keeptime/criu/timens.proto (never edited)
    image        CRIU image framing and the timens-0.img codec (pure)
    imagedir     files in CRIU's image directory, reached through a directory fd
    hookconfig   the hook's TOML configuration
    hook         the action script itself
"""
