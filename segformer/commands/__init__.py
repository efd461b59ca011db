"""Sub-commands of the ``segformer`` CLI, one module each (``add_arguments`` + ``run``)."""
