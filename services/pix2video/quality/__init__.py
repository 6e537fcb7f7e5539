"""Edit quality: the paper's metrics (CLIP-Text, CLIP-Image, Pixel-MSE) and the
``eval`` / ``compare`` commands that report them.

Kept apart from the engine: the engine edits, this package measures edits
(from frames, whatever made them). It imports no grpc.
"""
