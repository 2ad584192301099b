"""Registry of tasks (trainable on real data) and demonstrations, by module path.

Modules are imported lazily so the core never imports optional dataset packages.

A *task* module defines:
  ``DESCRIPTION: str``; ``add_arguments(parser)`` adding its own options;
  ``train(args) -> dict`` (trains, prints the held-out metric, returns metrics);
  optionally ``evaluate(args) -> dict``, ``generate(args) -> str`` and ``predict(args) ->
  dict`` (``--model DIR --input FILE --output FILE.csv``: inference from a saved model
  directory, see :mod:`jaxrnn.tasks.modeldir`);
  optionally ``DEFAULTS: dict`` overriding the defaults of the common options.
Every task receives the common options parsed by ``jaxrnn.cli`` (``args.task``, ``cell``,
``layers``, ``hidden``, ``bidirectional``, ``dropout``, ``epochs``, ``batch_size``, ``lr``,
``seed``, ``checkpoint_dir`` (default ``OUT/checkpoints``), ``resume``, ``out`` (default
``runs/TASK``), ``progress``) besides its own. A task module must import its dataset packages
inside functions (via ``jaxrnn.data.require``, whose error says how to install them), never at
module level. ``jaxrnn.train.models`` builds cells and classifiers from these options;
:mod:`jaxrnn.tasks.common` holds what tasks share (option errors, ``--clip-norm``, the
classifier loop, readers of user files).
A *demo* module defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``main(args) -> dict``.
"""

TASKS: dict[str, str] = {
    "g2p": "jaxrnn.tasks.g2p",
    "moving_digits": "jaxrnn.tasks.moving_digits",
    "digits": "jaxrnn.tasks.digits",
    "memory": "jaxrnn.tasks.memory",
    "speech": "jaxrnn.tasks.speech",
    "forecast": "jaxrnn.tasks.forecast",
    "sentiment": "jaxrnn.tasks.sentiment",
    "fashion": "jaxrnn.tasks.fashion",
    "music": "jaxrnn.tasks.music",
    "charlm": "jaxrnn.tasks.charlm",
    "classify": "jaxrnn.tasks.classify",
}

DEFAULT_TASK = "digits"

DEMOS: dict[str, str] = {
    "scan": "jaxrnn.tasks.scan_demo",
    "esn": "jaxrnn.tasks.demo_esn",
    "hopfield": "jaxrnn.tasks.demo_hopfield",
    "bam": "jaxrnn.tasks.demo_bam",
    "recursive": "jaxrnn.tasks.demo_recursive",
    "compressor": "jaxrnn.tasks.demo_compressor",
}
