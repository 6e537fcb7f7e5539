"""The ``pix2video`` subcommands, one module each, registered in :data:`pix2video.cli.COMMANDS`.

A command module has ``HELP`` (one line for ``pix2video --help``),
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code). Importing
one must stay cheap: torch, diffusers and the servers are imported inside
``run``, so that ``--help`` answers at once. A module that takes its own
argument list instead (``serve``) sets ``RAW_ARGS = True`` and its ``run``
receives ``args.argv``.
"""
