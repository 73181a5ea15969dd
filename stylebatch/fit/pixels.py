"""Pictures as the network sees them: PIL RGB images to float tensors (1, 3, H, W) in [0, 1] and back.

May import: nothing of stylebatch (torch, numpy and PIL only).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB → float tensor (1, 3, H, W) in [0, 1]."""
    data = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())  # (H, W, 3)
    return data.permute(2, 0, 1).unsqueeze(0).float().div(255).contiguous()


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """Float tensor (1, 3, H, W) or (3, H, W) → PIL RGB, clamped to [0, 1] and rounded to 8 bits."""
    t = tensor.detach().to("cpu", torch.float32).squeeze(0).clamp(0, 1)
    data = t.mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()  # (H, W, 3)
    return Image.fromarray(data.numpy())
