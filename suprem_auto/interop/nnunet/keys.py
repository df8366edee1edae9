"""nnU-Net v2 network state-dict names <-> ours: moved to :mod:`suprem_auto.pretrained.nnunet_keys` (pre-trained
loading needs it, and pretrained sits below interop); re-exported here."""
from suprem_auto.pretrained.nnunet_keys import from_nnunet_keys, nnunet_network_kind, to_nnunet_keys  # noqa: F401
