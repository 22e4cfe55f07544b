"""Document loaders, one small module per format, chosen by file suffix.

``discover(paths, ...)`` walks files and folders and yields :class:`Document` or
:class:`Quarantined` items: a bad file never stops a build and is never silently dropped.
"""

from llmfti.text.loaders.base import LoadContext, discover, supported_suffixes

__all__ = ["LoadContext", "discover", "supported_suffixes"]
