"""Models people can share: export a trained model to one zip with a model card, install or run such a zip."""
from suprem_auto.sharing.export import export_model
from suprem_auto.sharing.install import install_model, opened_model, verify_package
from suprem_auto.sharing.package import FORMAT_VERSION, ModelPackageError

__all__ = ["export_model", "install_model", "opened_model", "verify_package", "FORMAT_VERSION",
           "ModelPackageError"]
