"""Models: GluonCV zoo networks, class reset / head replacement, offline pretrained-weight lookup."""
from .pretrained import (load_state_matching, pretrained_file, pretrained_root, require_pretrained,
                         required_files, required_weights)

__all__ = ["load_state_matching", "pretrained_file", "pretrained_root", "require_pretrained", "required_files",
           "required_weights"]
