"""Entry point kept for models logged before models/ was grouped into subpackages.

Their MLflow model-from-code file says ``from models.bundle import LeadscorePyfunc``; new models import
:mod:`models.package.bundle`. Nothing in leadscore imports this module.
"""

from models.package.bundle import LeadscorePyfunc

__all__ = ["LeadscorePyfunc"]
