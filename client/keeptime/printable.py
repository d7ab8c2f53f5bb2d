"""Text from keeptimed (or from a record, which anyone may have written) made
safe for a terminal: a hostname, label, process name or message must not
move the cursor, retitle the window, or forge a line of output."""


def printable(text: str) -> str:
    """text with every character str.isprintable() refuses (C0 and C1 control
    characters such as ESC and CSI, DEL, line and paragraph separators,
    bidirectional overrides) written as a Python escape: "\\x1b", "\\u202e"."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
