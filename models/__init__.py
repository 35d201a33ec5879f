"""Models: audio nets, visual nets and fusion heads picked by name, assembled by ``create_model``.

``models.defense`` (memory-bank defense) is a separate module and is deliberately not imported here.
"""
from typing import List

from models.audio_net import AUDIO_NETS, create_audio_net
from models.av_model import AVModel, create_model
from models.fusion import FUSIONS, FusionHead, create_fusion
from models import crmt, robust_fusion  # noqa: F401  (register the 'crmt' and 'robust_fusion' heads)
from models.visual_net import VISUAL_NETS, create_visual_net


def list_audio_nets() -> List[str]:
    """Registered audio net names."""
    return AUDIO_NETS.names()


def list_visual_nets() -> List[str]:
    """Registered visual net names."""
    return VISUAL_NETS.names()


def list_fusions() -> List[str]:
    """Registered fusion head names."""
    return FUSIONS.names()


__all__ = [
    "AUDIO_NETS", "VISUAL_NETS", "FUSIONS", "AVModel", "FusionHead", "create_model", "create_audio_net",
    "create_visual_net", "create_fusion", "list_audio_nets", "list_visual_nets", "list_fusions",
]
