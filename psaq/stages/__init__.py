"""The pipeline's stages, one module each. Each module declares its ``STAGE`` (``stage.py``);
``psaq.stages.graph`` collects them into the graph that the Prefect flows, the DVC stages
(``dvc.yaml`` is generated from it) and the command line all run, with the same keys, into one
store. This file imports nothing: it is part of every stage's code, and so of every key.
"""
