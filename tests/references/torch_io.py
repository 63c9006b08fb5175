"""A PyTorch reference's weights as the numpy dict our converters consume."""

import numpy as np


def torch_state(module) -> dict[str, np.ndarray]:
    """A torch module's state dict as numpy arrays (what our converters consume)."""
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
