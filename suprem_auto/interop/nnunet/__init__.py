"""nnU-Net v2 interoperability: run its trained model folders and fine-tune from its checkpoints."""
from suprem_auto.interop.nnunet.checkpoint import (is_nnunet_checkpoint, load_with_allow_list, nnunet_safe_globals,
                                                   read_nnunet_checkpoint)
from suprem_auto.interop.nnunet.keys import from_nnunet_keys, nnunet_network_kind, to_nnunet_keys
from suprem_auto.interop.nnunet.model_folder import is_nnunet_model_folder, nnunet_predictor
from suprem_auto.interop.nnunet.plans import convert_plans

__all__ = ["convert_plans", "from_nnunet_keys", "is_nnunet_checkpoint", "is_nnunet_model_folder",
           "load_with_allow_list", "nnunet_network_kind", "nnunet_predictor", "nnunet_safe_globals",
           "read_nnunet_checkpoint", "to_nnunet_keys"]
