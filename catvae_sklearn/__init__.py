"""InfoCatVAE: a categorical variational autoencoder as a scikit-learn clusterer.

After Pineau & Lelarge (2018), *InfoCatVAE: Representation Learning with
Categorical Variational Autoencoders*, arXiv:1806.08240.
"""

from ._device import DeviceWarning
from ._estimator import InfoCatVAE

__version__ = "0.1.0"

__all__ = ["DeviceWarning", "InfoCatVAE", "__version__"]
