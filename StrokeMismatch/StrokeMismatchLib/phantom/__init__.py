"""Digital perfusion phantoms: curve level (:mod:`.curves`) and brain-like volumes (:mod:`.volume`)."""

from .curves import (  # noqa: F401
    CurveSet,
    add_gaussian_noise,
    add_rician_noise,
    concentration_to_mr_signal,
    gamma_variate_aif,
    mr_scale_for_drop,
    residue_function,
    simulate_curves,
)
from .volume import VolumePhantom, make_volume_phantom  # noqa: F401,E402
