"""Registry of tasks (trainable on real data) and demonstrations, by module path.

Modules are imported lazily so the core never imports optional dataset packages.

A *task* module defines:
  ``DESCRIPTION: str``; ``add_arguments(parser)`` adding its own options;
  ``train(args) -> dict`` (trains, prints the held-out metric, returns metrics);
  optionally ``evaluate(args) -> dict`` and ``generate(args) -> str``.
A *demo* module defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``main(args) -> dict``.
"""

TASKS: dict[str, str] = {}

DEMOS: dict[str, str] = {
    "scan": "jaxrnn.tasks.scan_demo",
}
