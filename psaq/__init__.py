"""psaq: data-free post-training quantization of vision transformers (PSAQ-ViT).

The library has no orchestration imports: Prefect, MLflow and DVC live in
``tasks/`` and ``flows/``. Everything here takes ``device`` and ``dtype`` as
parameters.
"""

__version__ = "0.1.0"
