"""One module per ``attnlab`` verb. Each defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``; heavy imports stay inside ``run`` so ``attnlab --help`` is quick.
``attnlab.cli`` lists the verbs explicitly."""
