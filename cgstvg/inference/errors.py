"""The errors a grounding request can end in: each message is one line that names the file or input at fault.

The command line prints the message and exits non-zero; the batch mode writes it into the pair's output line and
goes on with the next pair.
"""

from __future__ import annotations


class GroundingError(Exception):
    """Base class: a request that cannot be grounded, with a one-line message naming the thing at fault."""


class InputError(GroundingError, ValueError):
    """A bad (video, sentence) input: empty sentence, malformed batch line."""


class VideoError(GroundingError):
    """The video is missing, undecodable, empty, without a frame rate, or longer than the allowed limit."""


class CheckpointError(GroundingError):
    """The checkpoint is missing or unreadable, carries no params, or its params do not match its weights."""


__all__ = ["CheckpointError", "GroundingError", "InputError", "VideoError"]
