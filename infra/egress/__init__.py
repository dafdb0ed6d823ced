"""The egress guard: archivers only ever reach public http(s) addresses.

Checking a URL before a capture is not enough: pages redirect, pull
sub-resources from anywhere, and a name can resolve to a public address for
the check and to 127.0.0.1 a moment later (DNS rebinding). So every fetch of
every archiver goes through one ``EgressProxy`` (``proxy``): it resolves each
host once, vets every address with the ``EgressPolicy`` (``policy``) and
connects to the vetted address itself.
"""
