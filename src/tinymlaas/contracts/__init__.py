"""Typed messages that cross process and network boundaries (DESIGN section 3).

Everything here needs only pydantic and ``cryptography``: the device agent and the SDK
import it without the server stack.
"""
