"""The composition root: the only package that wires api, functions and infra into processes.

``service.api`` (the API role), ``service.embedded`` (all-in-one) and
``service.cli`` (the ``htbase`` command). Nothing else in the project imports
from here.
"""
